// Rate tab: report which transcripts have been scrolled to the end into the hidden #rate-read-flag field,
// as "<view token>:a,b". The server enables Submit only for the token of the pair it is showing, and
// refuses a submission without that flag; this script only reports what the reader did.
const AT_END_PX = 6;
const seen = new Set();
let token = null;

function atEnd(pane) {
  return pane.scrollHeight - pane.scrollTop - pane.clientHeight <= AT_END_PX;
}

function report() {
  const view = element.querySelector("[data-view]");
  const box = document.querySelector("#rate-read-flag textarea, #rate-read-flag input");
  if (!view || !box) return;
  if (view.dataset.view !== token) {
    token = view.dataset.view;
    seen.clear();
  }
  for (const pane of view.querySelectorAll("[data-pane]")) {
    if (atEnd(pane)) seen.add(pane.dataset.pane);
  }
  const value = token + ":" + [...seen].sort().join(",");
  if (box.value !== value) {
    box.value = value;
    box.dispatchEvent(new Event("input", { bubbles: true }));
  }
}

element.addEventListener("scroll", report, true);
window.addEventListener("resize", report);
watch("value", () => requestAnimationFrame(report));
requestAnimationFrame(report);
