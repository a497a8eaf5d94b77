// Charts of the Wendelin pages, drawn by dygraphs (served by this server from npm's package).
//
// A page marks a chart with <div class="charts" data-kind="stream|array" data-url="...">.
// The server sends only what fits on screen: a stream's downsampled series (min, max and
// mean per time bucket of each numeric field) or an array's min/max window. Zooming (drag
// across a chart; double-click zooms out) asks the server for the finer window just zoomed
// into, so the browser never loads a whole stream or array.
"use strict";

(function () {
  const HEIGHT = 180;

  // dygraphs writes its axis label as HTML (its legend escapes labels itself); field names come
  // from the stored records.
  function escapeHTML(text) {
    const element = document.createElement("span");
    element.textContent = text;
    return element.innerHTML;
  }

  function say(container, text) {
    container.querySelector(".chart-note").textContent = text;
  }

  async function getJSON(url, params) {
    // From the origin: a page opened as http://user:password@host/ would otherwise resolve
    // the path with the credentials in it, which fetch() refuses.
    const response = await fetch(location.origin + url + "?" + new URLSearchParams(params), {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (!response.ok) {
      throw new Error(`${response.status}: ${(await response.text()).trim()}`);
    }
    return response.json();
  }

  // One chart per field (each on its own scale), all zoomed together.
  class ChartSet {
    constructor(container, source) {
      this.container = container;
      this.source = source; // {load(range|null, buckets) -> {labels: {name: rows}, note}}
      this.charts = new Map();
      this.loading = 0;
    }

    buckets() {
      return Math.max(50, Math.min(2000, Math.round(this.container.clientWidth || 800)));
    }

    async show(range) {
      const number = ++this.loading;
      this.container.dataset.state = "loading";
      let answer;
      try {
        answer = await this.source.load(range, this.buckets());
      } catch (problem) {
        this.container.dataset.state = "error";
        say(this.container, `Could not load the chart: ${problem.message}`);
        return;
      }
      if (number !== this.loading) return; // a newer zoom is on its way
      this.draw(answer, range);
      say(this.container, this.charts.size ? answer.note : "No numeric values to plot here.");
      this.container.dataset.state = "ready";
    }

    draw(answer, range) {
      for (const [name, series] of Object.entries(answer.series)) {
        const options = {
          file: series.rows,
          dateWindow: range,
        };
        const existing = this.charts.get(name);
        if (existing) {
          existing.updateOptions(options);
          continue;
        }
        const block = document.createElement("div");
        block.className = "chart";
        const plot = document.createElement("div");
        plot.className = "chart-plot";
        plot.style.height = `${HEIGHT}px`;
        const legend = document.createElement("div");
        legend.className = "chart-legend";
        block.append(plot, legend);
        this.container.append(block);
        const chart = new Dygraph(plot, series.rows, {
          labels: series.labels,
          customBars: series.bars,
          ylabel: escapeHTML(name),
          labelsDiv: legend,
          legend: "always",
          labelsUTC: true,
          connectSeparatedPoints: false,
          drawPoints: series.rows.length < 200,
          axes: series.axes || {},
          dateWindow: range,
          zoomCallback: (low, high) => this.zoomed(chart, low, high),
        });
        this.charts.set(name, chart);
      }
    }

    zoomed(chart, low, high) {
      if (!chart.isZoomed("x")) {
        this.show(null); // double-click: back to the whole, at its own resolution
      } else {
        this.show([low, high]);
      }
    }
  }

  // A record stream: its numeric fields over event time (x: Date, in milliseconds).
  function streamSource(url) {
    return {
      async load(range, buckets) {
        const params = { buckets };
        if (range) {
          params.since = range[0] / 1000;
          params.until = range[1] / 1000;
        }
        const answer = await getJSON(url, params);
        const series = {};
        const times = answer.time.map((seconds) => new Date(seconds * 1000));
        for (const [name, values] of Object.entries(answer.fields)) {
          series[name] = {
            labels: ["time", name],
            bars: true,
            rows: times.map((time, i) => [
              time,
              values.mean[i] === null ? null : [values.min[i], values.mean[i], values.max[i]],
            ]),
          };
        }
        let note = `${answer.entries} entries in ${answer.time.length} points (min–max band around the mean).`;
        if (!answer.complete) {
          note += " Only the first entries of this window were read: zoom in to see the rest.";
        }
        return { series, note };
      },
    };
  }

  // A data array: min and max per bucket of one column over the row index.
  function arraySource(url, column, length) {
    return {
      async load(range, buckets) {
        const params = { buckets, column };
        if (range) {
          params.start = Math.min(length - 1, Math.max(0, Math.floor(range[0])));
          params.stop = Math.max(params.start + 1, Math.min(length, Math.ceil(range[1]) + 1));
        }
        const answer = await getJSON(url, params);
        const rows = answer.min.map((low, i) => [
          answer.start + i * answer.step,
          [low, (low + answer.max[i]) / 2, answer.max[i]],
        ]);
        const name = `column ${column}`;
        return {
          series: {
            [name]: {
              labels: ["row", name],
              bars: true,
              rows,
              axes: { x: { valueFormatter: (row) => `row ${Math.round(row)}` } },
            },
          },
          note:
            `Rows ${answer.start}–${answer.stop} in ${rows.length} buckets of ${answer.step} ` +
            `(pyramid level ${answer.level}; band: min to max).`,
        };
      },
    };
  }

  function start(container) {
    if (typeof Dygraph === "undefined") {
      say(container, "Charts need dygraphs, which did not load: see the server's README.");
      return;
    }
    const kind = container.dataset.kind;
    const source =
      kind === "array"
        ? arraySource(
            container.dataset.url,
            Number(container.dataset.column || 0),
            Number(container.dataset.length),
          )
        : streamSource(container.dataset.url);
    const set = new ChartSet(container, source);
    container.chartSet = set; // for tests and the browser console
    set.show(null);
  }

  document.querySelectorAll(".charts[data-url]").forEach(start);
})();
