// Bills, read through the BssOpenApi actions as the billing SDK reads them:
// the month's totals and its rows (one per order, or per hour of a
// pay-as-you-go file system).
import { useState } from "./vendor/hooks.module.js";
import { BSS } from "./api.js";
import { html, useLoad, ErrorBox, Table } from "./ui.js";

function thisMonth() {
  return new Date().toISOString().slice(0, 7);
}

export function Bills({ api }) {
  const [cycle, setCycle] = useState(thisMonth());
  const [overview, error] = useLoad(() => api.call("QueryBillOverview", { BillingCycle: cycle }, BSS), [cycle]);
  const [bill, billError] = useLoad(() => api.call("QueryBill", { BillingCycle: cycle, PageSize: 100 }, BSS), [cycle]);
  const totals = overview ? overview.Data.Items.Item : null;
  const rows = bill ? bill.Data.Items.Item : null;
  return html`<section>
    <h2>Bills</h2>
    <label class="inline">Month <input type="month" data-testid="bill-month" value=${cycle}
      onChange=${(e) => e.target.value && setCycle(e.target.value)} /></label>
    <${ErrorBox} error=${error || billError} />
    <h3>Totals</h3>
    <${Table} testid="bill-overview" rows=${totals} empty="Nothing billed this month." cols=${[
      ["Billing", (i) => i.SubscriptionType],
      ["Item", (i) => i.Item],
      ["Gross", (i) => `${i.PretaxGrossAmount} ${i.Currency}`],
      ["Discount", (i) => i.InvoiceDiscount],
      ["Due", (i) => html`<strong>${i.PretaxAmount} ${i.Currency}</strong>`],
    ]} />
    <h3>Rows${bill ? ` (${bill.Data.TotalCount})` : ""}</h3>
    <${Table} testid="bill-rows" rows=${rows} empty="No rows." cols=${[
      ["Record", (i) => i.RecordID],
      ["Item", (i) => i.Item],
      ["Billing", (i) => i.SubscriptionType],
      ["From", (i) => i.UsageStartTime],
      ["To", (i) => i.UsageEndTime],
      ["Amount", (i) => `${i.PretaxAmount} ${i.Currency}`],
      ["Status", (i) => i.Status],
    ]} />
  </section>`;
}
