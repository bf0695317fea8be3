// Access groups and their rules: which client networks may mount through
// the mount targets that use a group, read-write or read-only, squashed.
import { useState } from "./vendor/hooks.module.js";
import { all } from "./api.js";
import { html, useLoad, ErrorBox, DangerButton, ActionForm, Table } from "./ui.js";

function Rules({ api, group }) {
  const name = group.AccessGroupName;
  const [rules, error, reload] = useLoad(() => all(api, "DescribeAccessRules",
    { AccessGroupName: name, FileSystemType: "cpfs" }, "AccessRules", "AccessRule"), [name]);
  return html`<div class="rules" data-testid=${`rules-${name}`}>
    <${ErrorBox} error=${error} />
    <${Table} testid=${`rule-table-${name}`} rows=${rules} empty="No rule: no client may mount through this group." cols=${[
      ["Rule", (r) => r.AccessRuleId],
      ["Source", (r) => r.SourceCidrIp || r.Ipv6SourceCidrIp],
      ["Access", (r) => r.RWAccess],
      ["Users", (r) => r.UserAccess],
      ["Priority", (r) => r.Priority],
      ["", (r) => html`<${DangerButton} label="Delete rule" word=${r.AccessRuleId} testid="delete-rule"
        what=${`Clients from ${r.SourceCidrIp || r.Ipv6SourceCidrIp} lose this rule's access.`}
        run=${async () => { await api.call("DeleteAccessRule", { AccessGroupName: name, AccessRuleId: r.AccessRuleId, FileSystemType: "cpfs" }); reload(); }} />`],
    ]} />
    <${ActionForm} testid=${`create-rule-${name}`} submit="Add rule" done=${reload} fields=${[
      { name: "SourceCidrIp", label: "Source (IPv4 or CIDR)", placeholder: "10.0.0.0/8" },
      { name: "RWAccessType", label: "Access", options: ["RDWR", "RDONLY"] },
      { name: "UserAccessType", label: "Users", options: ["no_squash", "root_squash", "all_squash"] },
      { name: "Priority", label: "Priority (1-100)", type: "number", value: "1" },
    ]} run=${(v) => api.call("CreateAccessRule", { AccessGroupName: name, FileSystemType: "cpfs", ...v })} />
  </div>`;
}

export function AccessGroups({ api }) {
  const [groups, error, reload] = useLoad(() => all(api, "DescribeAccessGroups", { FileSystemType: "cpfs" },
    "AccessGroups", "AccessGroup"), []);
  const [open, setOpen] = useState(null);
  return html`<section>
    <h2>Access groups</h2>
    <${ErrorBox} error=${error} />
    <${Table} testid="group-table" rows=${groups} empty="No access group." cols=${[
      ["Name", (g) => html`<button class="link" data-testid=${`group-${g.AccessGroupName}`}
        onClick=${() => setOpen(open === g.AccessGroupName ? null : g.AccessGroupName)}>${g.AccessGroupName}</button>`],
      ["Description", (g) => g.Description],
      ["Rules", (g) => g.RuleCount],
      ["Mount targets", (g) => g.MountTargetCount],
      ["", (g) => g.AccessGroupName === "DEFAULT_VPC_GROUP_NAME" ? "" : html`<${DangerButton} label="Delete group"
        word=${g.AccessGroupName} testid="delete-group" what="Its rules go with it."
        run=${async () => { await api.call("DeleteAccessGroup", { AccessGroupName: g.AccessGroupName, FileSystemType: "cpfs" }); reload(); }} />`],
    ]} />
    ${groups && groups.filter((g) => g.AccessGroupName === open).map((g) => html`<h3>Rules of ${g.AccessGroupName}</h3><${Rules} api=${api} group=${g} />`)}
    <h3>Create an access group</h3>
    <${ActionForm} testid="create-group" submit="Create" done=${reload} fields=${[
      { name: "AccessGroupName", label: "Name", placeholder: "lab-net" },
      { name: "Description", label: "Description" },
    ]} run=${(v) => api.call("CreateAccessGroup", { AccessGroupType: "Vpc", FileSystemType: "cpfs", ...v })} />
  </section>`;
}
