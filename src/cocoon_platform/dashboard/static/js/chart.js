/* The spend chart: spend per UTC day, stacked by model, as an SVG built here (no library, no inline
 * style: colours come from the stylesheet by class). It is a picture with a summary for its
 * accessible name; the daily totals table beside it holds the same numbers for screen readers. */

import { clearChildren, el } from "./dom.js";
import { formatTon } from "./format.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 720;
const HEIGHT = 220;
const LEFT = 64;   // room for the y axis labels
const BOTTOM = 24; // room for the dates
const TOP = 8;
const SERIES = 6;  // colours in the stylesheet (.series-0 ... .series-5); more models share them
const DAY_MS = 86400000;

function svgEl(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const child of children) {
    node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

/* The UTC days from start to end (ISO dates), both included. */
function days(start, end) {
  const list = [];
  const last = Date.parse(end + "T00:00:00Z");
  for (let t = Date.parse(start + "T00:00:00Z"); t <= last; t += DAY_MS) {
    list.push(new Date(t).toISOString().slice(0, 10));
  }
  return list;
}

/* A round step for about three gridlines up to `max` (1, 2 or 5 times a power of ten). */
function gridStep(max) {
  const rough = max / 3;
  const power = Math.pow(10, Math.floor(Math.log10(rough)));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough);
  return Math.max(1, step);
}

/* Draw into `container` (and its legend into `legend`) the totals of /v1/usage, over start..end;
 * `scope` names what they cover when it is less than the whole account (e.g. one key). */
export function renderSpendChart(container, legend, totals, start, end, scope) {
  clearChildren(container);
  clearChildren(legend);
  const models = [];
  const byDay = new Map();
  let total = 0;
  for (const row of totals) {
    const cost = Number(row.cost_nanoton) || 0;
    if (!models.includes(row.model)) models.push(row.model);
    if (!byDay.has(row.date)) byDay.set(row.date, []);
    byDay.get(row.date).push({ model: row.model, cost });
    total += cost;
  }
  const dayList = start && end ? days(start, end) : [...byDay.keys()].sort();
  const dayTotals = dayList.map((day) => (byDay.get(day) || []).reduce((sum, part) => sum + part.cost, 0));
  const max = Math.max(1, ...dayTotals);
  const step = gridStep(max);
  const top = Math.ceil(max / step) * step;
  const plotHeight = HEIGHT - TOP - BOTTOM;
  const slot = (WIDTH - LEFT) / Math.max(1, dayList.length);
  const y = (value) => TOP + plotHeight - (value / top) * plotHeight;

  const name = "Spend per day by model" + (scope ? " of " + scope : "") + ", " + (dayList[0] || "") + " to " + (dayList[dayList.length - 1] || "")
    + " (UTC): " + formatTon(total) + " TON in all" + (models.length ? " over " + models.join(", ") : "") + ".";
  const svg = svgEl("svg", {
    viewBox: "0 0 " + WIDTH + " " + HEIGHT, role: "img", "aria-label": name, class: "spend-svg",
    preserveAspectRatio: "xMidYMid meet",
  });
  for (let value = 0; value <= top; value += step) {
    svg.appendChild(svgEl("line", { x1: LEFT, x2: WIDTH, y1: y(value), y2: y(value), class: "grid" }));
    svg.appendChild(svgEl("text", { x: LEFT - 6, y: y(value) + 4, "text-anchor": "end", class: "axis" },
      formatTon(value)));
  }
  dayList.forEach((day, i) => {
    const x = LEFT + i * slot;
    let base = 0;
    for (const part of byDay.get(day) || []) {
      if (part.cost <= 0) continue;
      const series = models.indexOf(part.model) % SERIES;
      svg.appendChild(svgEl("rect", {
        x: x + slot * 0.15, width: Math.max(1, slot * 0.7), y: y(base + part.cost),
        height: Math.max(1, y(base) - y(base + part.cost)), class: "bar series-" + series,
        "data-day": day, "data-model": part.model, "data-nanoton": part.cost,
      }, svgEl("title", {}, day + ", " + part.model + ": " + formatTon(part.cost) + " TON")));
      base += part.cost;
    }
    const last = dayList.length - 1;
    if ((i % 7 === 0 && last - i >= 4) || i === last) {
      svg.appendChild(svgEl("text", { x: x + slot / 2, y: HEIGHT - 6, "text-anchor": "middle", class: "axis" },
        day.slice(5)));
    }
  });
  container.appendChild(svg);
  models.forEach((model, i) => {
    legend.appendChild(el("li", null, el("span", { className: "swatch series-" + (i % SERIES) }), model));
  });
}
