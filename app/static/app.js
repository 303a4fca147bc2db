// The cbir web page: plain ES module, no build step, no third-party code (it must work offline).
//
// Every request goes through `call`, which turns any failure (the service's JSON {error, detail}, a proxy's
// HTML page, a dropped connection) into one sentence for the person, with the request id the operator can
// find in the logs.

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "cbir.apiKey";
const THUMBNAIL_SIZE = 256;
const MIN_BOX_PIXELS = 4; // a drag shorter than this is a click, not a region

const state = {
  query: null, // the File being searched
  box: null, // {x0, y0, x1, y1} in the query's own pixels, or null for the whole image
  searchSeq: 0, // answers to older searches are dropped
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
  503: "The service is still loading the model and index: try again in a moment.",
};

function detailText(detail) {
  if (detail === undefined || detail === null) return "";
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map(detailText).join("; ");
  if (typeof detail === "object") return detail.message || detail.msg || JSON.stringify(detail);
  return String(detail);
}

async function explain(response) {
  let detail = "";
  try {
    const body = await response.clone().json();
    detail = detailText(body.detail ?? body.error);
  } catch {
    // not JSON: a proxy's or server's page; its status says enough
  }
  const hint = HINTS[response.status] || (response.status >= 500 ? "The service failed." : "The request was refused.");
  const id = response.headers.get("x-request-id");
  const sentence = detail && !hint.includes(detail) ? `${hint} ${capitalise(detail)}.` : hint;
  return `${sentence.replace(/\.\.$/, ".")} (HTTP ${response.status}${id ? `, request id ${id}` : ""})`;
}

function capitalise(text) {
  return text ? text[0].toUpperCase() + text.slice(1) : text;
}

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function call(url, options = {}) {
  let response;
  try {
    response = await fetch(url, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  } catch (error) {
    throw new RequestFailed(`Could not reach the service (${error.message}). Is it running?`);
  }
  if (!response.ok) throw new RequestFailed(await explain(response), response.status);
  return response;
}

function showMessage(text) {
  $("message-text").textContent = text;
  $("message").hidden = false;
}

function clearMessage() {
  $("message").hidden = true;
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
  showReconstruction(file);
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
    $("results-summary").textContent = "No results: see the message above.";
    report(error);
  } finally {
    if (seq === state.searchSeq) $("search").disabled = false;
  }
}

function renderResults(results) {
  const grid = $("results");
  grid.replaceChildren();
  const region = state.box ? ` for the region ${boxText(state.box)}` : "";
  $("results-summary").textContent = results.length
    ? `${results.length} most similar${region}, closest first. Click one to search by it.`
    : "The collection is empty: add images below.";
  results.forEach((hit, rank) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "hit";
    button.dataset.id = hit.id;
    button.title = `Search by ${hit.original_name}`;
    const img = document.createElement("img");
    img.alt = hit.original_name;
    showThumbnail(img, `/images/${hit.id}/thumbnail?size=${THUMBNAIL_SIZE}`);
    const caption = document.createElement("span");
    caption.className = "caption";
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = `#${rank + 1} · ${hit.score.toFixed(3)}`;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = hit.original_name;
    caption.append(score, name);
    const entries = Object.entries(hit.metadata || {});
    if (entries.length) {
      const meta = document.createElement("span");
      meta.className = "meta";
      meta.textContent = entries.map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`).join(" · ");
      caption.append(meta);
    }
    button.append(img, caption);
    button.addEventListener("click", () => searchByResult(hit));
    item.append(button);
    grid.append(item);
  });
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
    await setQuery(new File([blob], hit.original_name, { type: blob.type }));
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
    if (metadata) {
      try {
        const parsed = JSON.parse(metadata);
        if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error("not an object");
      } catch {
        showMessage('The metadata must be a JSON object, such as {"sku": "A-17"}; fix it or leave it empty.');
        return;
      }
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

// ------------------------------------------------------------------------------------------------ start
$("message-close").addEventListener("click", clearMessage);
installKey();
installQueryInput();
installBoxDrawing();
installUpload();
loadStats();
