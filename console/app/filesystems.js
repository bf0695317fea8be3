// File systems: the list with the create form, and one file system's page
// (charts, data protection, mount targets, upgrade, deletion, and the
// sections in detail.js).
import { useEffect } from "./vendor/hooks.module.js";
import { all } from "./api.js";
import { html, useLoad, ErrorBox, DangerButton, ActionForm, Table, bytes } from "./ui.js";
import { Charts } from "./charts.js";
import { Filesets, AccessPoints, Clients, Ldap, UserQuotas } from "./detail.js";

const EDITIONS = ["advance_100", "advance_200", "economic", "standard", "advance"];
const CAPACITIES = ["2048", "5120", "10240", "30720", "51200"];
const DURATIONS = ["1", "2", "3", "6", "12", "24", "36"];
const SETTLING = ["Pending", "Extending", "Stopping", "Deleting"];

function fileSystems(api) {
  return all(api, "DescribeFileSystems", {}, "FileSystems", "FileSystem");
}

/** Reloads every 2 s while `busy` says something is still changing. */
function usePoll(busy, reload) {
  useEffect(() => {
    if (!busy) return undefined;
    const t = setInterval(reload, 2000);
    return () => clearInterval(t);
  }, [busy, reload]);
}

function protection(fs) {
  const r = fs.DataRedundancy;
  if (!r) return "–";
  return r.State === "Healthy" ? r.State : `${r.State} (${r.RepairProgress}% repaired)`;
}

export function FileSystemList({ api }) {
  const [list, error, reload] = useLoad(() => fileSystems(api), []);
  const [zones] = useLoad(() => api.call("DescribeZones", { FileSystemType: "cpfs" }), []);
  usePoll(list && list.some((f) => SETTLING.includes(f.Status)), reload);
  const zoneIds = zones ? zones.Zones.Zone.map((z) => z.ZoneId) : [];
  return html`<section>
    <h2>File systems</h2>
    <${ErrorBox} error=${error} />
    <${Table} testid="fs-table" rows=${list} empty="No file systems yet." cols=${[
      ["ID", (f) => html`<a href=${`#/fs/${f.FileSystemId}`}>${f.FileSystemId}</a>`],
      ["Description", (f) => f.Description],
      ["Edition", (f) => f.StorageType],
      ["Capacity", (f) => `${f.Capacity} GiB`],
      ["Bandwidth", (f) => `${f.Bandwidth} MB/s`],
      ["IOPS read / write", (f) => `${f.ReadIops} / ${f.WriteIops}`],
      ["Used", (f) => bytes(f.MeteredSize)],
      ["Status", (f) => html`<span class=${`status ${f.Status}`} data-testid=${`status-${f.FileSystemId}`}>${f.Status}</span>`],
      ["Billing", (f) => f.ChargeType + (f.ExpiredTime ? ` until ${f.ExpiredTime}` : "")],
      ["Data protection", protection],
    ]} />
    <h3>Create a file system</h3>
    <${ActionForm} testid="create-fs" submit="Create" done=${reload} fields=${[
      { name: "StorageType", label: "Edition", options: EDITIONS },
      { name: "Capacity", label: "Capacity (GiB)", options: CAPACITIES },
      { name: "Bandwidth", label: "Bandwidth (MB/s, optional)", type: "number", placeholder: "lowest of the tier" },
      { name: "ChargeType", label: "Billing", options: ["PayAsYouGo", "Subscription"] },
      { name: "Duration", label: "Months", options: DURATIONS, when: (v) => v.ChargeType === "Subscription" },
      { name: "ZoneId", label: "Zone", options: zoneIds.length ? zoneIds : [""] },
      { name: "VpcId", label: "VPC", value: "vpc-default" },
      { name: "VSwitchId", label: "vSwitch", value: "vsw-default" },
      { name: "Description", label: "Description", placeholder: "2-128 characters" },
    ]} run=${(v) => api.call("CreateFileSystem", {
      FileSystemType: "cpfs", ProtocolType: "cpfs", ...v,
      Duration: v.ChargeType === "Subscription" ? v.Duration : "",
    })} />
  </section>`;
}

function MountTargets({ api, fs, reloadFs }) {
  const [groups] = useLoad(() => all(api, "DescribeAccessGroups", { FileSystemType: "cpfs" },
    "AccessGroups", "AccessGroup"), []);
  const mts = fs.MountTargets.MountTarget;
  usePoll(mts.some((m) => m.Status !== "Active" && m.Status !== "Inactive"), reloadFs);
  return html`<section>
    <h3>Mount targets</h3>
    <${Table} testid="mt-table" rows=${mts} empty="No mount target: create one to mount the file system." cols=${[
      ["Domain", (m) => html`<code>${m.MountTargetDomain}</code>`],
      ["Access group", (m) => m.AccessGroupName],
      ["Status", (m) => html`<span class=${`status ${m.Status}`}>${m.Status}</span>`],
      ["Mount with", (m) => html`<code>cpfs mount ${m.MountTargetDomain}:/ /mnt/cpfs</code>`],
      ["", (m) => html`<${DangerButton} label="Delete mount target" word=${m.MountTargetDomain}
        what="Clients can no longer mount through it." testid="delete-mt"
        run=${async () => { await api.call("DeleteMountTarget", { FileSystemId: fs.FileSystemId, MountTargetDomain: m.MountTargetDomain }); reloadFs(); }} />`],
    ]} />
    <${ActionForm} testid="create-mt" submit="Add mount target" done=${reloadFs} fields=${[
      { name: "AccessGroupName", label: "Access group",
        options: groups ? groups.map((g) => g.AccessGroupName) : ["DEFAULT_VPC_GROUP_NAME"] },
      { name: "VpcId", label: "VPC", value: fs.VpcId },
      { name: "VSwitchId", label: "vSwitch", value: (fs.VswIds.VswId || [])[0] || "" },
    ]} run=${(v) => api.call("CreateMountTarget", { FileSystemId: fs.FileSystemId, NetworkType: "Vpc", ...v })} />
  </section>`;
}

function Protection({ fs }) {
  const r = fs.DataRedundancy;
  if (!r) return null;
  return html`<section data-testid="redundancy">
    <h3>Data protection</h3>
    <dl class="facts">
      <dt>State</dt><dd>${r.State}</dd>
      <dt>Copies</dt><dd>${r.Replicas}</dd>
      <dt>Chains</dt><dd>${r.Chains} (${r.DegradedChains} degraded, ${r.SyncingChains} being repaired)</dd>
      ${r.RepairTotalBytes > 0 && html`<dt>Repair</dt><dd>
        <progress max="100" value=${r.RepairProgress}></progress>
        ${r.RepairProgress}% of ${bytes(r.RepairTotalBytes)}</dd>`}
    </dl>
  </section>`;
}

export function FileSystemPage({ api, id }) {
  const [reply, error, reload] = useLoad(() => api.call("DescribeFileSystems", { FileSystemId: id }), [id]);
  const fs = reply && reply.FileSystems.FileSystem[0];
  usePoll(fs && (SETTLING.includes(fs.Status) || (fs.DataRedundancy && fs.DataRedundancy.SyncingChains > 0)), reload);
  if (error) return html`<${ErrorBox} error=${error} />`;
  if (!reply) return html`<p class="muted">Loading…</p>`;
  if (!fs) return html`<p>No file system ${id} in this account. <a href="#/">Back to the list</a></p>`;
  return html`<div>
    <p><a href="#/">← File systems</a></p>
    <h2>${fs.FileSystemId} <span class=${`status ${fs.Status}`} data-testid="fs-status">${fs.Status}</span></h2>
    <dl class="facts">
      <dt>Description</dt><dd>${fs.Description || "–"}</dd>
      <dt>Edition</dt><dd>${fs.StorageType}</dd>
      <dt>Capacity</dt><dd>${fs.Capacity} GiB (${bytes(fs.MeteredSize)} used)</dd>
      <dt>Bandwidth</dt><dd data-testid="fs-bandwidth">${fs.Bandwidth} MB/s</dd>
      <dt>IOPS</dt><dd>${fs.ReadIops} read, ${fs.WriteIops} write</dd>
      <dt>Zone</dt><dd>${fs.ZoneId}</dd>
      <dt>Billing</dt><dd>${fs.ChargeType}${fs.ExpiredTime ? ` until ${fs.ExpiredTime}` : ""}</dd>
      <dt>Created</dt><dd>${fs.CreateTime}</dd>
    </dl>
    <${Charts} api=${api} fsId=${id} />
    <${Protection} fs=${fs} />
    <${MountTargets} api=${api} fs=${fs} reloadFs=${reload} />
    <${Filesets} api=${api} fs=${fs} />
    <${AccessPoints} api=${api} fs=${fs} />
    <${Clients} api=${api} fs=${fs} />
    <${UserQuotas} api=${api} fs=${fs} />
    <${Ldap} api=${api} fs=${fs} reloadFs=${reload} />
    <section>
      <h3>Upgrade</h3>
      <${ActionForm} testid="upgrade-fs" submit="Upgrade" done=${reload} fields=${[
        { name: "Capacity", label: "Capacity (GiB)", options: CAPACITIES.filter((c) => Number(c) >= fs.Capacity) },
        { name: "Bandwidth", label: "Bandwidth (MB/s, optional)", type: "number" },
      ]} run=${(v) => api.call("UpgradeFileSystem", { FileSystemId: id, ...v })} />
    </section>
    <section>
      <h3>Delete</h3>
      <${DangerButton} label="Delete file system" word=${id} testid="delete-fs"
        what="Its data, mount targets and filesets are deleted with it."
        run=${async () => { await api.call("DeleteFileSystem", { FileSystemId: id }); location.hash = "#/"; }} />
    </section>
  </div>`;
}
