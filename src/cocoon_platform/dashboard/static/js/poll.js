/* Refreshing parts of a page: every `ms` while the tab is visible, and at once when it shows again. */

export function everyWhileVisible(fn, ms) {
  let timer = null;
  function schedule() {
    window.clearTimeout(timer);
    timer = window.setTimeout(tick, ms);
  }
  function tick() {
    if (document.hidden) {
      schedule();
      return;
    }
    Promise.resolve(fn()).then(schedule, schedule);
  }
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) {
      window.clearTimeout(timer);
      tick();
    }
  });
  schedule();
}
