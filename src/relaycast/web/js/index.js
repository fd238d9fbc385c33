// The index page: the streams the server knows, refreshed every 2 s from GET /api/streams.

const REFRESH_MS = 2000;

const body = document.getElementById("streams-body");
const statusEl = document.getElementById("status");

function cell(text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text;
  return td;
}

function link(href, text) {
  const a = document.createElement("a");
  a.href = href;
  a.textContent = text;
  return a;
}

export function render(streams) {
  body.replaceChildren();
  if (!streams.length) {
    const tr = document.createElement("tr");
    tr.className = "empty";
    const td = cell("No streams yet. Open a streamer page to go live.");
    td.colSpan = 5;
    tr.append(td);
    body.append(tr);
    return;
  }
  for (const s of streams) {
    const name = String(s.name);
    const enc = encodeURIComponent(name);
    const tr = document.createElement("tr");
    tr.dataset.stream = name;
    const nameCell = document.createElement("td");
    nameCell.append(link(`/watch/${enc}`, name));
    tr.append(
      nameCell,
      cell(s.live ? "● live" : "offline", s.live ? "live" : "offline"),
      cell(String(s.viewers ?? 0), "num"),
      cell(s.codec ?? s.video_codec ?? "—"),
    );
    const actions = document.createElement("td");
    actions.append(link(`/publish/${enc}`, "streamer page"));
    tr.append(actions);
    body.append(tr);
  }
}

async function refresh() {
  try {
    const resp = await fetch("/api/streams", { headers: { Accept: "application/json" } });
    if (!resp.ok) throw new Error(`${resp.status} ${resp.statusText}`);
    const data = await resp.json();
    render(Array.isArray(data) ? data : (data.streams ?? []));
    statusEl.textContent = "";
  } catch (err) {
    statusEl.textContent = `Cannot load the stream list (${err.message}); retrying…`;
  }
}

document.getElementById("start").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const name = document.getElementById("new-stream").value.trim();
  if (name) location.href = `/publish/${encodeURIComponent(name)}`;
});

refresh();
setInterval(refresh, REFRESH_MS);
