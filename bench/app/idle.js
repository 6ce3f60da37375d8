// A fork-mode app that does nothing but keep its event loop alive (footprint row).
setInterval(() => {}, 60000);
