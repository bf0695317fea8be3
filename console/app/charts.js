// A file system's charts: throughput, IOPS, latency and capacity used over
// the last hour, day or week, from DescribeFileSystemTimeSeries (the
// service keeps them per minute for 7 days), drawn with uPlot.
import { useEffect, useRef, useState } from "./vendor/hooks.module.js";
import uPlot from "./vendor/uPlot.esm.js";
import { html, useLoad, ErrorBox, bytes } from "./ui.js";

const RANGES = {
  hour: { seconds: 3600, period: 60 },
  day: { seconds: 86400, period: 300 },
  week: { seconds: 7 * 86400, period: 3600 },
};

const CHARTS = [
  { id: "throughput", title: "Throughput", unit: (v) => `${bytes(v)}/s`,
    series: [["Read", "ReadBandwidth"], ["Write", "WriteBandwidth"]] },
  { id: "iops", title: "IOPS", unit: (v) => (Math.abs(v) < 10 ? v.toFixed(2) : v.toFixed(0)),
    series: [["Read", "ReadIops"], ["Write", "WriteIops"]] },
  { id: "latency", title: "Mean latency", unit: (v) => `${v.toFixed(0)} µs`,
    series: [["Read", "ReadLatencyUs"], ["Write", "WriteLatencyUs"]] },
  { id: "capacity", title: "Capacity used", unit: (v) => bytes(v),
    series: [["Used", "UsedBytes"]] },
];

function iso(t) {
  return new Date(t * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
}

function Chart({ spec, points, from, to }) {
  const box = useRef(null);
  useEffect(() => {
    if (!box.current) return undefined;
    const xs = points.map((p) => Date.parse(p.Timestamp) / 1000);
    const data = [xs, ...spec.series.map(([, field]) => points.map((p) => p[field]))];
    const width = Math.max(260, Math.min(box.current.clientWidth || 600, 900));
    const plot = new uPlot({
      width,
      height: 180,
      series: [{}, ...spec.series.map(([label], i) => ({
        label,
        stroke: ["#2563eb", "#db2777"][i],
        width: 2,
        value: (u, v) => (v === null || v === undefined ? "–" : spec.unit(v)),
      }))],
      // The whole window, however few points fell in it.
      scales: { x: { time: true, range: () => [from, to] } },
      axes: [{}, { values: (u, ticks) => ticks.map((v) => spec.unit(v)), size: 80 }],
    }, data, box.current);
    return () => plot.destroy();
  }, [points, spec, from, to]);
  const busy = points.filter((p) => spec.series.some(([, f]) => p[f])).length;
  return html`<figure class="chart">
    <figcaption>${spec.title}</figcaption>
    <div ref=${box} data-testid=${`chart-${spec.id}`} data-points=${busy}></div>
  </figure>`;
}

export function Charts({ api, fsId }) {
  const [range, setRange] = useState("hour");
  const [now, setNow] = useState(() => Math.floor(Date.now() / 1000));
  const { seconds, period } = RANGES[range];
  const [reply, error] = useLoad(() => api.call("DescribeFileSystemTimeSeries", {
    FileSystemId: fsId, Period: period, StartTime: iso(now - seconds), EndTime: iso(now + 60),
  }), [fsId, range, now]);
  const points = reply ? reply.Datapoints.Datapoint : null;
  return html`<section>
    <h3>Performance</h3>
    <div class="toolbar">
      ${Object.keys(RANGES).map((r) => html`<button class=${r === range ? "on" : ""} data-testid=${`range-${r}`}
        onClick=${() => setRange(r)}>Last ${r}</button>`)}
      <button data-testid="charts-refresh" onClick=${() => setNow(Math.floor(Date.now() / 1000))}>Refresh</button>
    </div>
    <${ErrorBox} error=${error} />
    ${points && html`<div class="charts">${CHARTS.map((c) => html`<${Chart} spec=${c} points=${points}
      from=${now - seconds} to=${now} />`)}</div>`}
  </section>`;
}
