// Small pieces every page uses: the template tag, errors as the API words
// them, confirmation before anything destructive, tables, forms, units.
import { h } from "./vendor/preact.module.js";
import { useState, useEffect, useCallback } from "./vendor/hooks.module.js";
import htm from "./vendor/htm.module.js";

export const html = htm.bind(h);

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let v = Number(n);
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}

/** An API error, as its code and message, never a stack. */
export function ErrorBox({ error }) {
  if (!error) return null;
  return html`<div class="error" role="alert" data-testid="error">
    <strong>${error.code || "Error"}</strong> ${error.message}
    ${error.requestId ? html`<small> (request ${error.requestId})</small>` : null}
  </div>`;
}

/** Loads with `fn` whenever `deps` change; [data, error, reload]. */
export function useLoad(fn, deps) {
  const [state, setState] = useState({ data: null, error: null });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    fn().then((data) => live && setState({ data, error: null }),
      (error) => live && setState({ data: null, error }));
    return () => { live = false; };
  }, [...deps, tick]);
  const reload = useCallback(() => setTick((t) => t + 1), []);
  return [state.data, state.error, reload];
}

/**
 * A button that asks before it acts: the user types `word` (the resource's
 * id) to confirm. `run` may throw an ApiError, shown in the dialog.
 */
export function DangerButton({ label, word, what, run, testid }) {
  const [open, setOpen] = useState(false);
  const [typed, setTyped] = useState("");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const go = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await run();
      setOpen(false);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return html`
    <button class="danger" data-testid=${testid} onClick=${() => { setOpen(true); setTyped(""); setError(null); }}>${label}</button>
    ${open && html`<div class="modal" role="dialog" aria-modal="true">
      <form class="dialog" onSubmit=${go}>
        <h3>${label}?</h3>
        <p>${what} This cannot be undone. Type <code>${word}</code> to confirm.</p>
        <input data-testid="confirm-input" value=${typed} onInput=${(e) => setTyped(e.target.value)} autofocus />
        <${ErrorBox} error=${error} />
        <div class="actions">
          <button type="button" onClick=${() => setOpen(false)}>Cancel</button>
          <button type="submit" class="danger" data-testid="confirm" disabled=${typed !== word || busy}>${label}</button>
        </div>
      </form>
    </div>`}`;
}

/** A form whose submit calls `run(values)`; errors shown under it. */
export function ActionForm({ fields, submit, run, testid, done }) {
  const initial = Object.fromEntries(fields.map((f) => [f.name, f.value ?? (f.options ? f.options[0] : "")]));
  const [values, setValues] = useState(initial);
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const onSubmit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const r = await run(values);
      setValues(initial);
      if (done) done(r);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return html`<form class="action" data-testid=${testid} onSubmit=${onSubmit}>
    ${fields.filter((f) => !f.when || f.when(values)).map((f) => html`<label>
      <span>${f.label}</span>
      ${f.options
        ? html`<select name=${f.name} value=${values[f.name]} onChange=${(e) => setValues({ ...values, [f.name]: e.target.value })}>
            ${f.options.map((o) => html`<option value=${o}>${o}</option>`)}
          </select>`
        : html`<input name=${f.name} type=${f.type || "text"} placeholder=${f.placeholder || ""}
            value=${values[f.name]} onInput=${(e) => setValues({ ...values, [f.name]: e.target.value })} />`}
    </label>`)}
    <button type="submit" disabled=${busy}>${submit}</button>
    <${ErrorBox} error=${error} />
  </form>`;
}

/** rows: objects; cols: [header, (row) => cell]. */
export function Table({ rows, cols, empty, testid }) {
  if (!rows) return html`<p class="muted">Loading…</p>`;
  if (!rows.length) return html`<p class="muted" data-testid=${testid}>${empty}</p>`;
  return html`<div class="scroll"><table data-testid=${testid}>
    <thead><tr>${cols.map(([name]) => html`<th>${name}</th>`)}</tr></thead>
    <tbody>${rows.map((r) => html`<tr>${cols.map(([, cell]) => html`<td>${cell(r)}</td>`)}</tr>`)}</tbody>
  </table></div>`;
}
