/*
 * pow.js: Gatehouse's browser check, a proof of work compatible with ALTCHA v1. No dependencies,
 * no inline code, no eval: runs under `script-src 'self'; connect-src 'self'`.
 *
 * Page contract:
 *   <form method="post" data-pow="/api/v1/captcha">
 *     <input type="hidden" name="altcha">       (optional: created if missing)
 *     <p data-pow-status aria-live="polite"></p> (optional: created if missing)
 *   </form>
 *   <script src="/static/pow.js" defer></script>
 *
 * `data-pow` is a URL answering GET with a challenge {algorithm, challenge, maxnumber, salt, signature}.
 * As soon as the form has focus (autofocus included), or on submit, the script fetches a challenge and
 * looks for the number n in 0..maxnumber with hex(SHA-256(salt + n)) == challenge, using crypto.subtle
 * in Web Workers (this same file, loaded again with `new Worker`; same origin, so `script-src 'self'`
 * covers it) or, failing that, in batches on the page's thread. On submit it waits for the answer, puts
 * base64(JSON {algorithm, challenge, number, salt, signature}) into the `altcha` input and submits
 * (from a task of its own, never from inside the submit event it held back).
 * Without JavaScript the input stays empty and the server says what is missing.
 */
(function () {
  "use strict";

  // SHA-256(salt + n) == target for some n in [from, to]? Returns n or null.
  async function search(salt, challenge, from, to, pause) {
    const target = new Uint8Array(challenge.match(/../g).map((h) => parseInt(h, 16)));
    const encoder = new TextEncoder();
    const same = (buf) => {
      const b = new Uint8Array(buf);
      for (let i = 0; i < 32; i++) { if (b[i] !== target[i]) { return false; } }
      return true;
    };
    for (let start = from; start <= to; start += 1000) {
      const end = Math.min(start + 999, to);
      const pending = [];
      for (let n = start; n <= end; n++) {
        pending.push(crypto.subtle.digest("SHA-256", encoder.encode(salt + n)));
      }
      const hashes = await Promise.all(pending);
      const i = hashes.findIndex(same);
      if (i >= 0) { return start + i; }
      if (pause) { await pause(); }
    }
    return null;
  }

  // Worker mode: search the range it is given, answer once.
  if (typeof document === "undefined") {
    self.onmessage = (e) => {
      const job = e.data;
      search(job.salt, job.challenge, job.from, job.to).then(
        (number) => self.postMessage({ number: number }),
        () => self.postMessage({ error: true }));
    };
    return;
  }

  const scriptUrl = document.currentScript && document.currentScript.src;

  // Split the range over a few workers; the first to find the number wins.
  function searchInWorkers(ch) {
    return new Promise((resolve, reject) => {
      if (!scriptUrl || !window.Worker) { reject(new Error("no workers")); return; }
      const count = Math.max(1, Math.min(navigator.hardwareConcurrency || 1, 4));
      const step = Math.ceil((ch.maxnumber + 1) / count);
      const workers = [];
      let left = count;
      const finish = (settle, value) => { workers.forEach((w) => w.terminate()); settle(value); };
      for (let i = 0; i < count; i++) {
        let w;
        try { w = new Worker(scriptUrl); } catch (err) { finish(reject, err); return; }
        workers.push(w);
        w.onerror = (e) => { e.preventDefault(); finish(reject, new Error("worker failed")); };
        w.onmessage = (e) => {
          if (e.data.error) { finish(reject, new Error("worker failed")); }
          else if (e.data.number !== null) { finish(resolve, e.data.number); }
          else if (--left === 0) { finish(resolve, null); }
        };
        w.postMessage({ salt: ch.salt, challenge: ch.challenge, from: i * step,
          to: Math.min((i + 1) * step - 1, ch.maxnumber) });
      }
    });
  }

  const yieldToPage = () => new Promise((resolve) => setTimeout(resolve, 0));

  async function solve(ch) {
    if (ch.algorithm !== "SHA-256" || !/^[0-9a-f]{64}$/.test(ch.challenge)) { throw new Error("bad challenge"); }
    let number;
    try {
      number = await searchInWorkers(ch);
    } catch (e) {
      number = await search(ch.salt, ch.challenge, 0, ch.maxnumber, yieldToPage);
    }
    if (number === null) { throw new Error("no solution"); }
    const m = /[?&]expires=(\d+)/.exec(ch.salt);
    return {
      payload: btoa(JSON.stringify({ algorithm: ch.algorithm, challenge: ch.challenge, number: number,
        salt: ch.salt, signature: ch.signature })),
      expires: m ? Number(m[1]) : Infinity
    };
  }

  function setup(form) {
    const url = form.getAttribute("data-pow");
    let input = form.querySelector('input[name="altcha"]');
    if (!input) {
      input = document.createElement("input");
      input.type = "hidden";
      input.name = "altcha";
      form.appendChild(input);
    }
    let status = form.querySelector("[data-pow-status]");
    if (!status) {
      status = document.createElement("p");
      status.setAttribute("data-pow-status", "");
      status.className = "pow-status meta";
      form.appendChild(status);
    }
    status.setAttribute("aria-live", "polite");
    const say = (text) => { status.textContent = text; };
    const fresh = (answer) => Date.now() / 1000 < answer.expires - 10;

    let job = null; // promise of {payload, expires}
    let busy = false;
    function start() {
      if (!job) {
        say("Checking your browser\u2026");
        job = fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
          .then((r) => { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
          .then(solve)
          .then((answer) => { say("Done"); return answer; }, (err) => {
            job = null;
            say("The browser check could not finish. Please try again.");
            throw err;
          });
      }
      return job;
    }

    const early = () => { start().catch(() => {}); };
    form.addEventListener("focusin", early, { once: true });
    // `autofocus` may have put the cursor in the form before this script ran: start now.
    if (form.contains(document.activeElement)) { form.removeEventListener("focusin", early); early(); }
    form.addEventListener("submit", (event) => {
      if (input.value) { return; } // answered: let this submission through
      event.preventDefault();
      if (busy) { return; }
      busy = true;
      const submitter = event.submitter || null;
      start()
        .then((answer) => { if (fresh(answer)) { return answer; } job = null; return start(); })
        // Submit from a task of its own. An answer that is ready already would otherwise be submitted
        // from the microtasks run during this very submit event, and a browser ignores a submission
        // made while the form is firing its submit event (the first click would do nothing).
        .then((answer) => new Promise((resolve) => { setTimeout(() => resolve(answer), 0); }))
        .then((answer) => {
          input.value = answer.payload;
          if (form.requestSubmit) {
            form.requestSubmit(submitter);
          } else {
            if (submitter && submitter.name) { // form.submit() drops the clicked button's value
              const copy = document.createElement("input");
              copy.type = "hidden";
              copy.name = submitter.name;
              copy.value = submitter.value;
              form.appendChild(copy);
            }
            form.submit();
          }
          input.value = ""; // one use: a later submission (after a failed check, say) solves afresh
          job = null;
        })
        .catch(() => {})
        .finally(() => { busy = false; });
    });
    // Coming back with the Back button: the old answer has been used.
    window.addEventListener("pageshow", (e) => { if (e.persisted) { input.value = ""; job = null; say(""); } });
  }

  document.querySelectorAll("form[data-pow]").forEach(setup);
})();
