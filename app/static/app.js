// The cbir web page: plain ES module, no build step, no third-party code (it must work offline).
//
// Every request goes through `call`, which turns any failure (the service's JSON {error, detail}, a proxy's
// HTML page, a dropped connection) into one sentence for the person, with the request id the operator can
// find in the logs.

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "cbir.apiKey";
const THUMBNAIL_SIZE = 256;
const MIN_BOX_PIXELS = 4; // a drag shorter than this is a click, not a region

const BROWSE_PAGE = 24;
const MAX_BUSY_RETRIES = 5;

const state = {
  query: null, // the File being searched
  box: null, // {x0, y0, x1, y1} in the query's own pixels, or null for the whole image
  searchSeq: 0, // answers to older searches are dropped
  autoencoder: false, // the service runs an autoencoder: only then is /denoise asked for a reconstruction
  browse: { cursors: [], after: null, next: null, selected: new Set() }, // cursors: the pages before
  detail: null, // the image shown in the detail view
};

// ---------------------------------------------------------------------------------------------- errors
class RequestFailed extends Error {
  constructor(message, status = 0) {
    super(message);
    this.status = status;
  }
}

const HINTS = {
  401: "An API key is needed (or the one given is unknown): enter it at the top right, under “API key”.",
  403: "The API key given may not do this: adding images needs a write key.",
  404: "Not found.",
  409: "The collection was built with another encoder.",
  413: "That file is too large.",
  422: "The service could not use that input.",
  429: "Too many requests: wait a moment and try again.",
  503: "The service is busy: try again in a moment.",
};
const LOADING = "The service is still loading the model and index: try again in a moment.";

function detailText(detail) {
  if (detail === undefined || detail === null) return "";
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map(detailText).join("; ");
  if (typeof detail === "object") return detail.message || detail.msg || JSON.stringify(detail);
  return String(detail);
}

async function errorCode(response) {
  try {
    return (await response.clone().json()).error || "";
  } catch {
    return ""; // not JSON: a proxy's or server's page
  }
}

async function explain(response) {
  let detail = "";
  try {
    const body = await response.clone().json();
    detail = detailText(body.detail ?? body.error);
  } catch {
    // not JSON: a proxy's or server's page; its status says enough
  }
  const loading = response.status === 503 && (await errorCode(response)) === "not_ready";
  const hint = loading
    ? LOADING
    : HINTS[response.status] || (response.status >= 500 ? "The service failed." : "The request was refused.");
  const id = response.headers.get("x-request-id");
  const sentence = detail && !hint.includes(detail) ? `${hint} ${capitalise(detail)}.` : hint;
  return `${sentence.replace(/\.\.$/, ".")} (HTTP ${response.status}${id ? `, request id ${id}` : ""})`;
}

// The JSON object a field holds, or null when it holds something else (or no JSON).
function jsonObject(text) {
  try {
    const parsed = JSON.parse(text);
    return parsed !== null && typeof parsed === "object" && !Array.isArray(parsed) ? parsed : null;
  } catch {
    return null;
  }
}

// "key: value · key: value" under a tile, or null when there is no metadata.
function metadataLine(metadata) {
  const entries = Object.entries(metadata || {});
  if (!entries.length) return null;
  const line = document.createElement("span");
  line.className = "meta";
  line.textContent = entries.map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`).join(" · ");
  return line;
}

function capitalise(text) {
  return text ? text[0].toUpperCase() + text.slice(1) : text;
}

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// A busy service (503 with Retry-After: every inference slot taken) is asked again after the time it gives,
// saying so meanwhile; a 503 "not_ready" (the model still loading) and other failures are explained.
async function call(url, options = {}) {
  for (let attempt = 0; ; attempt += 1) {
    let response;
    try {
      response = await fetch(url, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
    } catch (error) {
      throw new RequestFailed(`Could not reach the service (${error.message}). Is it running?`);
    }
    if (response.status === 503 && attempt < MAX_BUSY_RETRIES && (await errorCode(response)) === "busy") {
      const wait = Math.min(Math.max(Number(response.headers.get("retry-after")) || 2, 1), 30);
      showMessage(`The service is busy, retrying in ${wait} s…`, "busy");
      await sleep(wait * 1000);
      continue;
    }
    if ($("message").dataset.kind === "busy") clearMessage();
    if (!response.ok) throw new RequestFailed(await explain(response), response.status);
    return response;
  }
}

function jsonOptions(method, body) {
  return { method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
}

function showMessage(text, kind = "error") {
  $("message-text").textContent = text;
  $("message").dataset.kind = kind;
  $("message").hidden = false;
}

function clearMessage() {
  $("message").hidden = true;
  $("message").dataset.kind = "";
  $("message-text").textContent = "";
}

function report(error) {
  showMessage(error instanceof RequestFailed ? error.message : `Something went wrong on this page: ${error.message}`);
}

// ----------------------------------------------------------------------------------------------- stats
async function loadStats() {
  try {
    const stats = await (await call("/stats")).json();
    const images = stats.count === 1 ? "1 image" : `${stats.count.toLocaleString()} images`;
    $("stats").textContent = `${images} · ${stats.dimension}-d descriptors · ${stats.encoder} · ${stats.device}`;
    $("stats").title = stats.index_type;
    state.autoencoder = String(stats.encoder).startsWith("dae@");
  } catch (error) {
    $("stats").textContent = error.message;
    if (error.status === 503) setTimeout(loadStats, 3000); // still loading: ask again
  }
}

// ----------------------------------------------------------------------------------------------- query
function setQuery(file) {
  state.query = file;
  state.box = null;
  clearMessage();
  drawBox();
  const image = $("query-image");
  if (image.src) URL.revokeObjectURL(image.src);
  image.src = URL.createObjectURL(file);
  image.dataset.name = file.name;
  $("preview").hidden = false;
  $("drop-hint").textContent = `${file.name} — choose or drop another image`;
  $("search").disabled = false;
  if (state.autoencoder) showReconstruction(file);
  else $("reconstruction").hidden = true;
  return search();
}

function boxText(box) {
  return `${box.x0},${box.y0},${box.x1},${box.y1}`;
}

async function search() {
  if (!state.query) return;
  const seq = ++state.searchSeq;
  const form = new FormData();
  form.append("file", state.query, state.query.name);
  form.append("k", $("k").value);
  if (state.box) form.append("box", boxText(state.box));
  $("results-summary").textContent = "Searching…";
  $("search").disabled = true;
  try {
    const answer = await (await call("/search", { method: "POST", body: form })).json();
    if (seq !== state.searchSeq) return;
    clearMessage();
    renderResults(answer.results);
  } catch (error) {
    if (seq !== state.searchSeq) return;
    clearResults(error.status === 422); // a query the service could not use: its preview goes too
    report(error);
  } finally {
    if (seq === state.searchSeq) $("search").disabled = false;
  }
}

// An error must not leave the previous answer on screen, as if it were this query's.
function clearResults(withPreview) {
  $("results").replaceChildren();
  $("results-summary").textContent = "No results: see the message above.";
  if (withPreview) {
    $("preview").hidden = true;
    $("reconstruction").hidden = true;
    state.query = null;
    $("search").disabled = true;
  }
}

function renderResults(results, title = null) {
  const grid = $("results");
  grid.replaceChildren();
  const region = state.box ? ` for the region ${boxText(state.box)}` : "";
  $("results-summary").textContent = results.length
    ? title || `${results.length} most similar${region}, closest first. Click one to search by it.`
    : "Nothing found: the collection is empty, or nothing matches.";
  results.forEach((hit, rank) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "hit";
    button.dataset.id = hit.id;
    button.title = `Search by ${hit.path}`;
    const img = document.createElement("img");
    img.alt = hit.path;
    showThumbnail(img, `${hit.thumbnail_url}&size=${THUMBNAIL_SIZE}`);
    const caption = document.createElement("span");
    caption.className = "caption";
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = `#${rank + 1} · ${hit.score.toFixed(3)}`;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = hit.path;
    caption.append(score, name);
    const meta = metadataLine(hit.metadata);
    if (meta) caption.append(meta);
    button.append(img, caption);
    button.addEventListener("click", () => searchByResult(hit));
    const more = document.createElement("button");
    more.type = "button";
    more.className = "more";
    more.textContent = "More like this";
    more.addEventListener("click", () => moreLikeThis(hit.id, hit.path));
    item.append(button, more);
    grid.append(item);
  });
}

// "More like this": the stored image's own descriptor, without uploading it again; it is left out.
async function moreLikeThis(id, path) {
  const seq = ++state.searchSeq;
  $("results-summary").textContent = "Searching…";
  try {
    const answer = await (await call("/search", jsonOptions("POST", { id, k: Number($("k").value) }))).json();
    if (seq !== state.searchSeq) return;
    clearMessage();
    renderResults(answer.results, `${answer.results.length} most like ${path}, closest first.`);
    $("results-heading").scrollIntoView({ block: "start" });
  } catch (error) {
    if (seq !== state.searchSeq) return;
    clearResults(false);
    report(error);
  }
}

function showThumbnail(img, url) {
  img.addEventListener("error", () => img.classList.add("broken"), { once: true });
  if (!Object.keys(authHeaders()).length) {
    img.loading = "lazy";
    img.src = url; // no key: the browser fetches (and caches) it directly
    return;
  }
  // An <img> cannot send a key: fetch it, then show the bytes.
  call(url)
    .then((response) => response.blob())
    .then((blob) => {
      img.src = URL.createObjectURL(blob);
    })
    .catch(() => img.classList.add("broken"));
}

async function searchByResult(hit) {
  try {
    const blob = await (await call(`/images/${hit.id}/file`)).blob();
    await setQuery(new File([blob], hit.path.split("/").pop(), { type: blob.type }));
  } catch (error) {
    report(error);
  }
}

async function showReconstruction(file) {
  const figure = $("reconstruction");
  figure.hidden = true;
  const form = new FormData();
  form.append("file", file, file.name);
  let response;
  try {
    response = await fetch("/denoise", { method: "POST", body: form, headers: authHeaders() });
  } catch {
    return; // optional feature: a failure here must not hide the search results
  }
  // Only a 200 with an image is a reconstruction; a 4xx means no autoencoder is configured.
  const type = response.headers.get("content-type") || "";
  if (response.status !== 200 || !type.startsWith("image/") || file !== state.query) return;
  const image = $("reconstruction-image");
  if (image.src) URL.revokeObjectURL(image.src);
  image.src = URL.createObjectURL(await response.blob());
  figure.hidden = false;
}

// ------------------------------------------------------------------------------------------ region box
function drawBox() {
  const element = $("box");
  const image = $("query-image");
  $("clear-box").hidden = !state.box;
  if (!state.box || !image.naturalWidth) {
    element.hidden = true;
    $("box-info").textContent = "Drag on the image to search for a region only.";
    return;
  }
  const sx = image.clientWidth / image.naturalWidth;
  const sy = image.clientHeight / image.naturalHeight;
  Object.assign(element.style, {
    left: `${image.offsetLeft + state.box.x0 * sx}px`,
    top: `${image.offsetTop + state.box.y0 * sy}px`,
    width: `${(state.box.x1 - state.box.x0) * sx}px`,
    height: `${(state.box.y1 - state.box.y0) * sy}px`,
  });
  element.hidden = false;
  const { x0, y0, x1, y1 } = state.box;
  $("box-info").textContent = `Region ${x1 - x0}×${y1 - y0} px at (${x0}, ${y0}) of ${image.naturalWidth}×${image.naturalHeight}.`;
}

function toImagePixels(event) {
  const image = $("query-image");
  const rect = image.getBoundingClientRect();
  const x = ((event.clientX - rect.left) / rect.width) * image.naturalWidth;
  const y = ((event.clientY - rect.top) / rect.height) * image.naturalHeight;
  return {
    x: Math.round(Math.min(Math.max(x, 0), image.naturalWidth)),
    y: Math.round(Math.min(Math.max(y, 0), image.naturalHeight)),
  };
}

function installBoxDrawing() {
  const stage = $("stage");
  let start = null;
  let previous = null; // the box before this drag, kept when the drag turns out to be a click
  stage.addEventListener("pointerdown", (event) => {
    if (!$("query-image").naturalWidth || event.button !== 0) return;
    event.preventDefault();
    stage.setPointerCapture(event.pointerId);
    start = toImagePixels(event);
    previous = state.box;
  });
  stage.addEventListener("pointermove", (event) => {
    if (!start) return;
    const here = toImagePixels(event);
    state.box = {
      x0: Math.min(start.x, here.x),
      y0: Math.min(start.y, here.y),
      x1: Math.max(start.x, here.x),
      y1: Math.max(start.y, here.y),
    };
    drawBox();
  });
  const finish = () => {
    if (!start) return;
    start = null;
    const box = state.box;
    if (box === previous) return; // a click, not a drag: nothing changed
    if (box && (box.x1 - box.x0 < MIN_BOX_PIXELS || box.y1 - box.y0 < MIN_BOX_PIXELS)) {
      state.box = previous; // too small to mean a region: keep what was there
      drawBox();
      return;
    }
    drawBox();
    search();
  };
  stage.addEventListener("pointerup", finish);
  stage.addEventListener("pointercancel", finish);
  $("clear-box").addEventListener("click", () => {
    state.box = null;
    drawBox();
    search();
  });
  $("query-image").addEventListener("load", drawBox);
  $("query-image").addEventListener("error", () => {
    $("box-info").textContent =
      "This browser cannot show a preview of that file, so no region can be drawn; the search still works.";
  });
  window.addEventListener("resize", drawBox);
}

// ---------------------------------------------------------------------------------------------- choose
function installQueryInput() {
  $("query-file").addEventListener("change", (event) => {
    const [file] = event.target.files;
    if (file) setQuery(file);
    event.target.value = ""; // choosing the same file again searches again
  });
  const drop = $("drop");
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    const [file] = event.dataTransfer.files;
    if (!file) {
      showMessage("Nothing to search: drop an image file (not a link or text).");
      return;
    }
    setQuery(file);
  });
  $("k").addEventListener("change", search);
  $("search").addEventListener("click", search);
}

// ---------------------------------------------------------------------------------------------- upload
function logLine(text, kind) {
  const line = document.createElement("li");
  line.className = kind;
  line.textContent = text;
  $("upload-log").prepend(line);
}

function installUpload() {
  $("upload-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const files = [...$("upload-files").files];
    const metadata = $("upload-metadata").value.trim();
    if (metadata && !jsonObject(metadata)) {
      showMessage('The metadata must be a JSON object, such as {"sku": "A-17"}; fix it or leave it empty.');
      return;
    }
    $("upload").disabled = true;
    let failures = 0;
    for (const file of files) {
      const form = new FormData();
      form.append("file", file, file.name);
      if (metadata) form.append("metadata", metadata);
      try {
        const response = await call("/images", { method: "POST", body: form });
        const answer = await response.json();
        logLine(
          answer.duplicate
            ? `${file.name}: already in the collection as #${answer.id}`
            : `${file.name}: added as #${answer.id}`,
          answer.duplicate ? "duplicate" : "added",
        );
      } catch (error) {
        failures += 1;
        logLine(`${file.name}: ${error.message}`, "failed");
      }
    }
    $("upload").disabled = false;
    if (failures) showMessage(`${failures} of ${files.length} uploads failed: the reasons are listed under the upload form.`);
    else $("upload-files").value = "";
    loadStats();
    loadBrowse();
  });
}

function installKey() {
  const key = $("api-key");
  key.value = localStorage.getItem(KEY_STORAGE) || "";
  key.addEventListener("change", () => {
    if (key.value.trim()) localStorage.setItem(KEY_STORAGE, key.value.trim());
    else localStorage.removeItem(KEY_STORAGE);
    loadStats();
  });
}

// ---------------------------------------------------------------------------------------------- browse
function browseQuery(after) {
  const params = new URLSearchParams({ limit: String(BROWSE_PAGE), order: $("browse-order").value });
  const prefix = $("browse-prefix").value.trim();
  const filter = $("browse-filter").value.trim();
  if (prefix) params.set("path_prefix", prefix);
  if (filter) params.set("filter", filter);
  if (after) params.set("after", after);
  return params;
}

let browseTicket = 0; // the latest listing asked for

async function loadBrowse(after = state.browse.after) {
  const filter = $("browse-filter").value.trim();
  if (filter && !jsonObject(filter)) {
    showMessage('The filter must be a JSON object, such as {"sku": "A-17"} or {"price": {"$gte": 10}}.');
    return;
  }
  // Paging buttons wait for this page: a second click on Next before the first page came back would
  // otherwise push the same cursor twice (the label said page 3 over page 2's images).
  $("browse-next").disabled = true;
  $("browse-prev").disabled = true;
  const ticket = ++browseTicket;
  try {
    const page = await (await call(`/images?${browseQuery(after)}`)).json();
    if (ticket !== browseTicket) return; // a newer listing (a filter submitted meanwhile) wins
    state.browse.after = after;
    state.browse.next = page.next;
    renderBrowse(page);
  } catch (error) {
    if (ticket !== browseTicket) return;
    $("browse-prev").disabled = state.browse.cursors.length === 0;
    $("browse-grid").replaceChildren();
    $("browse-summary").textContent = "Nothing to show: see the message above.";
    report(error);
    if (error.status === 503) setTimeout(() => loadBrowse(after), 3000); // still loading: ask again
  }
}

function renderBrowse(page) {
  const grid = $("browse-grid");
  grid.replaceChildren();
  const first = state.browse.cursors.length * BROWSE_PAGE + 1;
  $("browse-summary").textContent = page.total
    ? `${page.total.toLocaleString()} images match; showing ${first}–${first + page.images.length - 1}. Click one to open it.`
    : "No image matches.";
  $("browse-page").textContent = page.total ? `page ${state.browse.cursors.length + 1} of ${Math.ceil(page.total / BROWSE_PAGE)}` : "";
  for (const image of page.images) {
    const item = document.createElement("li");
    item.className = "tile";
    item.dataset.id = image.id;
    const pick = document.createElement("input");
    pick.type = "checkbox";
    pick.className = "select";
    pick.title = `Select ${image.path}`;
    pick.checked = state.browse.selected.has(image.id);
    item.classList.toggle("selected", pick.checked);
    pick.addEventListener("change", () => {
      if (pick.checked) state.browse.selected.add(image.id);
      else state.browse.selected.delete(image.id);
      item.classList.toggle("selected", pick.checked);
      updateDeleteButton();
    });
    const button = document.createElement("button");
    button.type = "button";
    button.className = "hit";
    button.title = `Open ${image.path}`;
    const img = document.createElement("img");
    img.alt = image.path;
    showThumbnail(img, `${image.thumbnail_url}&size=${THUMBNAIL_SIZE}`);
    const caption = document.createElement("span");
    caption.className = "caption";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = image.path;
    caption.append(name);
    const meta = metadataLine(image.metadata);
    if (meta) caption.append(meta);
    button.append(img, caption);
    button.addEventListener("click", () => openDetail(image.id));
    item.append(pick, button);
    grid.append(item);
  }
  $("browse-prev").disabled = state.browse.cursors.length === 0;
  $("browse-next").disabled = !page.next;
  updateDeleteButton();
}

function updateDeleteButton() {
  const count = state.browse.selected.size;
  $("browse-delete").disabled = count === 0;
  $("browse-delete").textContent = count ? `Delete ${count} selected` : "Delete selected";
}

function installBrowse() {
  $("browse-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.browse.cursors = [];
    state.browse.selected.clear();
    loadBrowse(null);
  });
  $("browse-order").addEventListener("change", () => $("browse-form").requestSubmit());
  $("browse-next").addEventListener("click", () => {
    if (!state.browse.next || $("browse-next").disabled) return;
    state.browse.cursors.push(state.browse.after);
    loadBrowse(state.browse.next);
  });
  $("browse-prev").addEventListener("click", () => {
    if (!state.browse.cursors.length || $("browse-prev").disabled) return;
    loadBrowse(state.browse.cursors.pop());
  });
  $("browse-delete").addEventListener("click", async () => {
    const ids = [...state.browse.selected];
    if (!ids.length || !window.confirm(`Delete ${ids.length} image${ids.length === 1 ? "" : "s"}? This cannot be undone.`)) return;
    try {
      const answer = await (await call("/images/delete", jsonOptions("POST", { ids }))).json();
      state.browse.selected.clear();
      showMessage(`Deleted ${answer.deleted} image${answer.deleted === 1 ? "" : "s"}.`, "info");
      await loadBrowse();
      loadStats();
    } catch (error) {
      report(error);
    }
  });
}

// ---------------------------------------------------------------------------------------------- detail
async function openDetail(id) {
  try {
    const image = await (await call(`/images/${id}`)).json();
    state.detail = image;
    $("detail-path").textContent = image.path;
    $("detail-info").textContent =
      `#${image.id} · ${image.width}×${image.height} ${image.format} · ${(image.size_bytes / 1024).toFixed(0)} KB · added ${new Date(image.created_at).toLocaleString()}`;
    $("detail-metadata").value = JSON.stringify(image.metadata, null, 2);
    $("detail-status").textContent = "";
    $("detail-download").href = image.url;
    $("detail-download").download = image.path.split("/").pop();
    const img = $("detail-image");
    img.removeAttribute("src");
    img.alt = image.path;
    showThumbnail(img, `${image.url}?v=${image.sha256.slice(0, 12)}`);
    if (!$("detail").open) $("detail").showModal();
  } catch (error) {
    report(error);
  }
}

// What the textarea holds, as an RFC 7396 merge patch of what the image has: keys gone become null.
function mergePatch(before, after) {
  const patch = { ...after };
  for (const key of Object.keys(before)) if (!(key in after)) patch[key] = null;
  return patch;
}

function installDetail() {
  $("detail-close").addEventListener("click", () => $("detail").close());
  $("detail-save").addEventListener("click", async () => {
    const image = state.detail;
    const edited = jsonObject($("detail-metadata").value.trim() || "{}");
    if (!edited) {
      $("detail-status").textContent = 'The metadata must be a JSON object, such as {"sku": "A-17"}.';
      return;
    }
    try {
      const patch = { metadata: mergePatch(image.metadata, edited) };
      const saved = await (await call(`/images/${image.id}`, jsonOptions("PATCH", patch))).json();
      state.detail = saved;
      $("detail-metadata").value = JSON.stringify(saved.metadata, null, 2);
      $("detail-status").textContent = "Saved.";
      loadBrowse();
    } catch (error) {
      $("detail-status").textContent = error.message;
    }
  });
  $("detail-more").addEventListener("click", () => {
    const image = state.detail;
    $("detail").close();
    moreLikeThis(image.id, image.path);
  });
}

// ------------------------------------------------------------------------------------------------ start
$("message-close").addEventListener("click", clearMessage);
installKey();
installQueryInput();
installBoxDrawing();
installUpload();
installBrowse();
installDetail();
loadStats();
loadBrowse(null);
