// The console's shell: sign-in with an AccessKey pair (kept in this tab's
// sessionStorage only, gone when the tab closes), navigation, and the
// pages. Every page is a client of the public API (api.js).
import { render } from "./vendor/preact.module.js";
import { useState, useEffect } from "./vendor/hooks.module.js";
import { Api } from "./api.js";
import { html, ErrorBox } from "./ui.js";
import { FileSystemList, FileSystemPage } from "./filesystems.js";
import { AccessGroups } from "./access.js";
import { Bills } from "./bills.js";

const SESSION = "cpfs-console-key";

function saved() {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION) || "null");
    return s && s.keyId && s.secret ? s : null;
  } catch {
    return null;
  }
}

function SignIn({ onSignedIn }) {
  const [keyId, setKeyId] = useState("");
  const [secret, setSecret] = useState("");
  const [region, setRegion] = useState("cn-hangzhou");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const creds = { keyId: keyId.trim(), secret, region: region.trim() };
      const api = new Api(creds);
      // Any signed call proves the key; this one costs the service least.
      await api.call("DescribeFileSystems", { PageSize: 1 });
      sessionStorage.setItem(SESSION, JSON.stringify(creds));
      onSignedIn(creds);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return html`<form class="signin" data-testid="signin" onSubmit=${submit}>
    <h1>CPFS console</h1>
    <p class="muted">Sign in with an AccessKey pair. Requests are signed in this page; the secret is
      sent nowhere and kept only until this tab closes.</p>
    <label><span>AccessKey ID</span><input name="keyId" autocomplete="username" value=${keyId}
      onInput=${(e) => setKeyId(e.target.value)} required /></label>
    <label><span>AccessKey secret</span><input name="secret" type="password" autocomplete="current-password"
      value=${secret} onInput=${(e) => setSecret(e.target.value)} required /></label>
    <label><span>Region</span><input name="region" value=${region} onInput=${(e) => setRegion(e.target.value)} /></label>
    <button type="submit" disabled=${busy}>Sign in</button>
    <${ErrorBox} error=${error} />
  </form>`;
}

function route() {
  const h = location.hash.replace(/^#/, "") || "/";
  const fs = h.match(/^\/fs\/([A-Za-z0-9-]+)$/);
  if (fs) return { page: "fs", id: fs[1] };
  if (h === "/access") return { page: "access" };
  if (h === "/bills") return { page: "bills" };
  return { page: "list" };
}

function App() {
  const [creds, setCreds] = useState(saved);
  const [where, setWhere] = useState(route);
  useEffect(() => {
    const on = () => setWhere(route());
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  if (!creds) return html`<${SignIn} onSignedIn=${setCreds} />`;
  let api;
  try {
    api = new Api(creds);
  } catch (e) {
    return html`<${ErrorBox} error=${e} />`;
  }
  const signOut = () => {
    sessionStorage.removeItem(SESSION);
    setCreds(null);
  };
  const nav = [["#/", "File systems", "list"], ["#/access", "Access groups", "access"], ["#/bills", "Bills", "bills"]];
  return html`<div class="shell">
    <header>
      <strong>CPFS</strong>
      <nav>${nav.map(([href, label, page]) => html`<a href=${href}
        class=${where.page === page || (page === "list" && where.page === "fs") ? "on" : ""}>${label}</a>`)}</nav>
      <span class="who" title=${`region ${creds.region}`}>${creds.keyId}</span>
      <button data-testid="signout" onClick=${signOut}>Sign out</button>
    </header>
    <main>
      ${where.page === "list" && html`<${FileSystemList} api=${api} />`}
      ${where.page === "fs" && html`<${FileSystemPage} api=${api} id=${where.id} />`}
      ${where.page === "access" && html`<${AccessGroups} api=${api} />`}
      ${where.page === "bills" && html`<${Bills} api=${api} />`}
    </main>
  </div>`;
}

render(html`<${App} />`, document.getElementById("app"));
