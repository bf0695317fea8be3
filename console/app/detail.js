// Sections of a file system's page beside its mount targets: filesets and
// their quotas, access points, mounted and fenced clients, user and group
// quotas, and its LDAP directory.
import { useState } from "./vendor/hooks.module.js";
import { all } from "./api.js";
import { html, useLoad, ErrorBox, DangerButton, ActionForm, Table, bytes } from "./ui.js";

export function Filesets({ api, fs }) {
  const id = fs.FileSystemId;
  const [list, error, reload] = useLoad(async () => {
    const items = [];
    let token = "";
    const seen = new Set();
    do {
      seen.add(token);
      const r = await api.call("DescribeFilesets", { FileSystemId: id, MaxResults: 100, NextToken: token });
      items.push(...((r.Entries && r.Entries.Entrie) || []));
      token = r.NextToken || "";
    } while (token && !seen.has(token));
    return items;
  }, [id]);
  const [quotaError, setQuotaError] = useState(null);
  return html`<section>
    <h3>Filesets</h3>
    <${ErrorBox} error=${error || quotaError} />
    <${Table} testid="fileset-table" rows=${list} empty="No fileset." cols=${[
      ["ID", (f) => f.FsetId],
      ["Path", (f) => html`<code>${f.FileSystemPath}</code>`],
      ["Status", (f) => f.Status],
      ["Used", (f) => `${bytes(f.SpaceUsage)}, ${f.FileCountUsage} files`],
      ["Quota", (f) => (f.Quota && (f.Quota.SizeLimit || f.Quota.FileCountLimit))
        ? `${f.Quota.SizeLimit ? bytes(f.Quota.SizeLimit) : "–"}, ${f.Quota.FileCountLimit || "–"} files` : "none"],
      ["", (f) => html`<button onClick=${async () => {
        setQuotaError(null);
        try {
          await api.call("CancelFilesetQuota", { FileSystemId: id, FsetId: f.FsetId });
          reload();
        } catch (e) { setQuotaError(e); }
      }}>Remove quota</button>
        <${DangerButton} label="Delete fileset" word=${f.FsetId} testid="delete-fileset"
          what="Its usage stops being tracked (the directory and its data stay)."
          run=${async () => { await api.call("DeleteFileset", { FileSystemId: id, FsetId: f.FsetId }); reload(); }} />`],
    ]} />
    <${ActionForm} testid="create-fileset" submit="Create fileset" done=${reload} fields=${[
      { name: "FileSystemPath", label: "Path", placeholder: "/team-a/" },
      { name: "Description", label: "Description" },
    ]} run=${(v) => api.call("CreateFileset", { FileSystemId: id, ...v })} />
    ${list && list.length > 0 && html`<${ActionForm} testid="fileset-quota" submit="Set quota" done=${reload} fields=${[
      { name: "FsetId", label: "Fileset", options: list.map((f) => f.FsetId) },
      { name: "SizeLimit", label: "Size limit (bytes)", type: "number" },
      { name: "FileCountLimit", label: "File count limit", type: "number" },
    ]} run=${(v) => api.call("SetFilesetQuota", { FileSystemId: id, ...v })} />`}
  </section>`;
}

export function AccessPoints({ api, fs }) {
  const id = fs.FileSystemId;
  const [list, error, reload] = useLoad(() => all(api, "DescribeCpfsAccessPoints", { FileSystemId: id },
    "AccessPoints", null), [id]);
  return html`<section>
    <h3>Access points</h3>
    <${ErrorBox} error=${error} />
    <${Table} rows=${list} empty="No access point." cols=${[
      ["ID", (a) => a.AccessPointId],
      ["Root", (a) => html`<code>${a.RootDirectory.RootPath}</code> (${a.RootDirectory.RootPathStatus})`],
      ["Status", (a) => a.Status],
      ["", (a) => html`<${DangerButton} label="Delete access point" word=${a.AccessPointId}
        what="New mounts through it are refused." testid="delete-ap"
        run=${async () => { await api.call("DeleteCpfsAccessPoint", { FileSystemId: id, AccessPointId: a.AccessPointId }); reload(); }} />`],
    ]} />
    <${ActionForm} submit="Create access point" done=${reload} fields=${[
      { name: "RootDirectory.RootPath", label: "Root directory", value: "/" },
      { name: "Description", label: "Description" },
    ]} run=${(v) => api.call("CreateCpfsAccessPoint", { FileSystemId: id, ...v })} />
  </section>`;
}

export function Clients({ api, fs }) {
  const id = fs.FileSystemId;
  const domains = fs.MountTargets.MountTarget.map((m) => m.MountTargetDomain);
  const [mounted, error, reload] = useLoad(async () => {
    const out = [];
    for (const d of domains) {
      const items = await all(api, "DescribeMountedClients", { FileSystemId: id, MountTargetDomain: d },
        "Clients", "Client");
      out.push(...items);
    }
    return out;
  }, [id, domains.join(",")]);
  const [actionError, setActionError] = useState(null);
  const [fenced, fenceError, reloadFenced] = useLoad(async () => {
    const r = await api.call("DescribeBlackListClients", { FileSystemId: id });
    return Object.entries(JSON.parse(r.Clients || "{}")).map(([ip, state]) => ({ ip, state }));
  }, [id]);
  return html`<section>
    <h3>Clients</h3>
    <${ErrorBox} error=${error || fenceError || actionError} />
    <${Table} testid="client-table" rows=${mounted} empty="No client active in the last minute." cols=${[
      ["Address", (c) => c.ClientIP],
      ["Mount target", (c) => html`<code>${c.MountTargetDomain}</code>`],
      ["Mounted", (c) => c.MountTime],
      ["Last active", (c) => c.LastActiveTime],
    ]} />
    <button onClick=${reload}>Refresh</button>
    <h4>Fenced clients</h4>
    <${Table} rows=${fenced} empty="None." cols=${[
      ["Address", (c) => c.ip],
      ["State", (c) => c.state],
      ["", (c) => html`<button onClick=${async () => {
        setActionError(null);
        try {
          await api.call("RemoveClientFromBlackList", { FileSystemId: id, ClientIP: c.ip, ClientToken: crypto.randomUUID() });
          reloadFenced();
        } catch (e) { setActionError(e); }
      }}>Lift fence</button>`],
    ]} />
    <${ActionForm} submit="Fence client" done=${reloadFenced} fields=${[
      { name: "ClientIP", label: "Client address", placeholder: "10.0.0.7" },
    ]} run=${(v) => api.call("AddClientToBlackList", { FileSystemId: id, ClientToken: crypto.randomUUID(), ...v })} />
  </section>`;
}

export function UserQuotas({ api, fs }) {
  const id = fs.FileSystemId;
  const [list, error, reload] = useLoad(() => all(api, "DescribeUserQuotas", { FileSystemId: id },
    "UserQuotas", "UserQuota"), [id]);
  const [actionError, setActionError] = useState(null);
  return html`<section>
    <h3>User and group quotas</h3>
    <${ErrorBox} error=${error || actionError} />
    <${Table} rows=${list} empty="No user or group quota." cols=${[
      ["Who", (q) => `${q.UserType} ${q.UserId}`],
      ["Size", (q) => `${bytes(q.SizeReal)} of ${q.SizeLimit ? bytes(q.SizeLimit) : "–"}`],
      ["Files", (q) => `${q.FileCountReal} of ${q.FileCountLimit || "–"}`],
      ["", (q) => html`<button onClick=${async () => {
        setActionError(null);
        try {
          await api.call("CancelUserQuota", { FileSystemId: id, UserType: q.UserType, UserId: q.UserId });
          reload();
        } catch (e) { setActionError(e); }
      }}>Remove</button>`],
    ]} />
    <${ActionForm} submit="Set quota" done=${reload} fields=${[
      { name: "UserType", label: "Type", options: ["Uid", "Gid"] },
      { name: "UserId", label: "Id", type: "number" },
      { name: "SizeLimit", label: "Size limit (bytes)", type: "number" },
      { name: "FileCountLimit", label: "File count limit", type: "number" },
    ]} run=${(v) => api.call("SetUserQuota", { FileSystemId: id, ...v })} />
  </section>`;
}

export function Ldap({ api, fs, reloadFs }) {
  const id = fs.FileSystemId;
  if (fs.Ldap) {
    return html`<section>
      <h3>LDAP directory</h3>
      <dl class="facts">
        <dt>Server</dt><dd><code>${fs.Ldap.URI}</code></dd>
        <dt>Search base</dt><dd>${fs.Ldap.SearchBase}</dd>
        <dt>Bind DN</dt><dd>${fs.Ldap.BindDN || "anonymous"}</dd>
      </dl>
      <${DangerButton} label="Remove LDAP configuration" word=${id} testid="delete-ldap"
        what="Users and groups are no longer resolved from the directory."
        run=${async () => { await api.call("DeleteLDAPConfig", { FileSystemId: id }); reloadFs(); }} />
    </section>`;
  }
  return html`<section>
    <h3>LDAP directory</h3>
    <p class="muted">Users and groups come from the clients' numeric ids.</p>
    <${ActionForm} submit="Use an LDAP directory" done=${reloadFs} fields=${[
      { name: "URI", label: "Server", placeholder: "ldap://10.0.0.5:389" },
      { name: "SearchBase", label: "Search base", placeholder: "dc=example,dc=com" },
      { name: "BindDN", label: "Bind DN (optional)" },
      { name: "BindPassword", label: "Bind password", type: "password" },
    ]} run=${(v) => api.call("CreateLDAPConfig", { FileSystemId: id, ...v })} />
  </section>`;
}
