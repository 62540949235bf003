//! No user enumeration: statistical proof (being written).
