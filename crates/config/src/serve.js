// Static file server run by `pm2 serve` (and by `script: "serve"` or a
// `static` section of an ecosystem file), configured through the
// environment as pm2's: PM2_SERVE_PATH, PM2_SERVE_PORT (8080),
// PM2_SERVE_HOST, PM2_SERVE_SPA, PM2_SERVE_HOMEPAGE (/index.html),
// PM2_SERVE_BASIC_AUTH with PM2_SERVE_BASIC_AUTH_USERNAME / _PASSWORD.
// Written by Corral into PM2_HOME; edits there are overwritten.
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');

const env = process.env;
const root = path.resolve(env.PM2_SERVE_PATH || process.argv[2] || '.');
const port = parseInt(env.PM2_SERVE_PORT || process.argv[3], 10) || 8080;
const host = env.PM2_SERVE_HOST || undefined;
const spa = env.PM2_SERVE_SPA === 'true';
const homepage = env.PM2_SERVE_HOMEPAGE || '/index.html';
const auth = env.PM2_SERVE_BASIC_AUTH === 'true'
  ? { user: env.PM2_SERVE_BASIC_AUTH_USERNAME || '', pass: env.PM2_SERVE_BASIC_AUTH_PASSWORD || '' }
  : null;

const TYPES = {
  html: 'text/html', htm: 'text/html', css: 'text/css', js: 'application/javascript',
  mjs: 'application/javascript', json: 'application/json', map: 'application/json',
  txt: 'text/plain', md: 'text/markdown', csv: 'text/csv', xml: 'application/xml',
  svg: 'image/svg+xml', png: 'image/png', jpg: 'image/jpeg', jpeg: 'image/jpeg', gif: 'image/gif',
  webp: 'image/webp', ico: 'image/x-icon', avif: 'image/avif', bmp: 'image/bmp',
  woff: 'font/woff', woff2: 'font/woff2', ttf: 'font/ttf', otf: 'font/otf', eot: 'application/vnd.ms-fontobject',
  mp3: 'audio/mpeg', wav: 'audio/wav', ogg: 'audio/ogg', mp4: 'video/mp4', webm: 'video/webm',
  pdf: 'application/pdf', zip: 'application/zip', gz: 'application/gzip', wasm: 'application/wasm',
};

function contentType(file) {
  return TYPES[path.extname(file).slice(1).toLowerCase()] || 'text/plain';
}

function authorized(req) {
  if (!auth) return true;
  const h = req.headers.authorization || '';
  if (!h.startsWith('Basic ')) return false;
  const plain = Buffer.from(h.slice(6), 'base64').toString();
  const i = plain.indexOf(':');
  return i >= 0 && plain.slice(0, i) === auth.user && plain.slice(i + 1) === auth.pass;
}

function send(res, code, type, body) {
  res.writeHead(code, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

function notFound(res) {
  fs.readFile(path.join(root, '404.html'), (err, body) => send(res, 404, 'text/html', err ? '404 Not Found' : body));
}

// `tried` lists what a single-page app fallback already tried: the file
// itself, then its name at the root, then the homepage.
function serve(urlPath, req, res, tried) {
  const wantsHome = urlPath === '/' || urlPath === '';
  const rel = wantsHome ? homepage : urlPath;
  const file = path.resolve(path.join(root, rel));
  if (file !== root && !file.startsWith(root + path.sep)) return send(res, 403, 'text/html', '403 Forbidden');
  fs.readFile(file, (err, body) => {
    if (!err) {
      res.writeHead(200, {
        'Content-Type': contentType(file),
        'Content-Length': body.length,
        'Access-Control-Allow-Origin': '*',
        'Access-Control-Allow-Methods': 'GET',
      });
      return res.end(body);
    }
    if (err.code === 'EISDIR') return serve(path.posix.join(rel, 'index.html'), req, res, tried);
    if (err.code !== 'ENOENT') return send(res, 500, 'text/plain', `Cannot serve this file: ${err.code}\n`);
    if (spa && tried === 0 && !wantsHome) return serve('/' + path.basename(rel), req, res, 1);
    if (spa && tried < 2 && rel !== homepage) return serve(homepage, req, res, 2);
    console.error(`[${new Date().toISOString()}] ${req.method} ${urlPath}: not found`);
    notFound(res);
  });
}

http.createServer((req, res) => {
  if (!authorized(req)) {
    res.setHeader('WWW-Authenticate', 'Basic realm="Authentication service"');
    return send(res, 401, 'text/html', '401 Unauthorized');
  }
  let urlPath;
  try {
    urlPath = decodeURIComponent(new URL(req.url, 'http://localhost').pathname);
  } catch (e) {
    return send(res, 400, 'text/plain', 'Bad request\n');
  }
  serve(urlPath, req, res, 0);
}).listen(port, host, () => {
  console.log(`Exposing ${root} directory on ${host || '0.0.0.0'}:${port}`);
  // Started with wait_ready: `pm2 serve` returns once this listens.
  if (process.send) process.send('ready');
});
