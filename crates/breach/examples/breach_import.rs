//! Import a Pwned Passwords download, or query an index.
//!
//! ```sh
//! cargo run --release -p gatehouse-breach --example breach_import -- [--exact] [--min-count N] INPUT OUT_DIR
//! cargo run --release -p gatehouse-breach --example breach_import -- --check INDEX_FILE PASSWORD...
//! ```

use gatehouse_breach::{builtin_common_contains, import_with, BreachIndex, ImportOptions};
use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("--check") {
        args.next();
        let index = BreachIndex::open(args.next().ok_or("--check INDEX_FILE PASSWORD...")?)?;
        let mut any = false;
        for pw in args {
            let (common, pwned) = (builtin_common_contains(&pw), index.contains_password(&pw));
            any |= common || pwned;
            println!("{pw}: builtin common list {common}, index {pwned}");
        }
        return Ok(if any { ExitCode::from(1) } else { ExitCode::SUCCESS });
    }
    let mut options = ImportOptions::default();
    let mut positional = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--exact" => options.exact = true,
            "--min-count" => options.min_count = args.next().ok_or("--min-count N")?.parse()?,
            _ => positional.push(a),
        }
    }
    let [input, out_dir] = <[String; 2]>::try_from(positional)
        .map_err(|_| "usage: [--exact] [--min-count N] INPUT OUT_DIR | --check INDEX_FILE PASSWORD...")?;
    let report = import_with(&input, &out_dir, &options)?;
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}
