// The real `lanyard serve` on loopback, its CLI, its gRPC Authorize and its mail directory.
import { spawn, execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, createWriteStream } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

const run = promisify(execFile);
const here = path.dirname(fileURLToPath(import.meta.url));
export const repo = path.resolve(here, '../..');
export const artifacts = path.join(repo, 'e2e', 'artifacts');

/** The binary scripts/e2e built (LANYARD_BIN), or the workspace's default build. */
export function lanyardBin() {
  if (process.env.LANYARD_BIN) return process.env.LANYARD_BIN;
  const target = process.env.CARGO_TARGET_DIR || path.join(repo, 'target');
  return path.join(target, 'debug', 'lanyard');
}

/** A loopback port nobody listens on right now. */
export async function freePort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export const POSTGRES_URL = process.env.LANYARD_TEST_POSTGRES_URL || 'postgres://postgres@127.0.0.1:5432/postgres';
export const REDIS_URL = process.env.LANYARD_TEST_REDIS_URL || 'redis://127.0.0.1:6379';

/** Whether Postgres and Redis answer (the second backend needs both). */
export async function serversAnswer() {
  try {
    await run('psql', [POSTGRES_URL, '-Atc', 'select 1']);
    await run('redis-cli', ['-u', REDIS_URL, 'ping']);
    return true;
  } catch {
    return false;
  }
}

function withDatabase(url, name) {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}

/**
 * Starts `lanyard serve` with a fresh data directory (SQLite) or a fresh Postgres database and a
 * Redis key prefix of its own. Invitation emails carry the default link (Lanyard's landing page,
 * `<issuer>/invite/{token}`); `applicationLoginUrl` is where the hosted pages send a browser
 * that came without an application.
 */
export async function startLanyard({ backend, applicationLoginUrl, name, httpPort }) {
  const grpcPort = await freePort();
  httpPort ??= await freePort();
  const dataDir = mkdtempSync(path.join(os.tmpdir(), `lanyard-e2e-${name}-`));
  const operatorKey = `op-${randomBytes(24).toString('hex')}`;
  const serviceKey = `svc-${randomBytes(24).toString('hex')}`;
  const issuer = `http://127.0.0.1:${httpPort}`;
  const env = {
    PATH: process.env.PATH,
    HOME: process.env.HOME || dataDir,
    RUST_LOG: process.env.E2E_RUST_LOG || 'info',
    NO_COLOR: '1',
    LANYARD_DATA_DIR: dataDir,
    LANYARD_LISTEN_ADDR: `127.0.0.1:${grpcPort}`,
    LANYARD_HTTP_ADDR: `127.0.0.1:${httpPort}`,
    LANYARD_TOKEN_ISSUER: issuer,
    LANYARD_OPERATOR_KEYS: operatorKey,
    LANYARD_SERVICE_KEYS: serviceKey,
    LANYARD_ENCRYPTION_KEY: randomBytes(32).toString('base64'),
    // The organizations' providers are oidc-provider instances on loopback.
    LANYARD_ALLOW_HTTP_ISSUERS: 'true',
    LANYARD_MAIL_TRANSPORT: 'files',
    LANYARD_APPLICATION_LOGIN_URL: applicationLoginUrl,
    LANYARD_SHUTDOWN_GRACE_SECONDS: '2',
  };
  let database;
  if (backend === 'postgres') {
    database = `lanyard_e2e_${randomUUID().replaceAll('-', '')}`;
    await run('psql', [POSTGRES_URL, '-Atc', `CREATE DATABASE ${database}`]);
    env.LANYARD_DATABASE_URL = withDatabase(POSTGRES_URL, database);
    env.LANYARD_REDIS_URL = REDIS_URL;
    env.LANYARD_REDIS_KEY_PREFIX = database;
  }
  const log = path.join(artifacts, `lanyard-${name}.log`);
  const out = createWriteStream(log);
  const child = spawn(lanyardBin(), ['serve'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.pipe(out);
  child.stderr.pipe(out);
  let exited = null;
  child.on('exit', (code, signal) => { exited = { code, signal }; });

  const server = {
    backend, issuer, grpcAddr: `127.0.0.1:${grpcPort}`, dataDir, operatorKey, serviceKey, log, env,
    mailDir: path.join(dataDir, 'mail'),
    /** `lanyard <args>` with `--json`, as the operator or with `apiKey`; its parsed output. */
    async cli(args, { apiKey = operatorKey, stdin } = {}) {
      const full = [...args, '--endpoint', `http://${server.grpcAddr}`, '--api-key', apiKey, '--json'];
      const cliEnv = { PATH: process.env.PATH, HOME: env.HOME, LANYARD_DATA_DIR: dataDir, RUST_LOG: 'warn' };
      const result = await new Promise((resolve) => {
        const p = spawn(lanyardBin(), full, { env: cliEnv, stdio: ['pipe', 'pipe', 'pipe'] });
        let stdout = '';
        let stderr = '';
        p.stdout.on('data', (d) => { stdout += d; });
        p.stderr.on('data', (d) => { stderr += d; });
        p.on('close', (code) => resolve({ code, stdout, stderr }));
        p.stdin.end(stdin ?? '');
      });
      if (result.code !== 0) {
        const err = new Error(`lanyard ${args.join(' ')} exited ${result.code}: ${result.stderr.trim()}`);
        err.stderr = result.stderr;
        throw err;
      }
      const text = result.stdout.trim();
      return text ? JSON.parse(text) : null;
    },
    /** AuthorizationService.Authorize over gRPC, as a product service would ask. */
    authorize(accessToken, permission = 'organization:read') {
      return new Promise((resolve, reject) => {
        authz(server.grpcAddr).Authorize({ access_token: accessToken, permission }, (err, answer) => {
          if (err) reject(err); else resolve(answer);
        });
      });
    },
    /** The invitation emails written so far, newest last: { to, subject, link, file }. */
    mails() {
      let files = [];
      try { files = readdirSync(server.mailDir).filter((f) => f.endsWith('.eml')).sort(); } catch { return []; }
      return files.map((f) => parseEml(path.join(server.mailDir, f)));
    },
    async waitForMail(to, timeoutMs = 20000) {
      const until = Date.now() + timeoutMs;
      while (Date.now() < until) {
        const found = server.mails().filter((m) => m.to.toLowerCase().includes(to.toLowerCase()));
        if (found.length) return found[found.length - 1];
        await sleep(200);
      }
      throw new Error(`no invitation email to ${to} in ${server.mailDir}`);
    },
    async stop() {
      if (!exited) {
        child.kill('SIGTERM');
        for (let i = 0; i < 50 && !exited; i += 1) await sleep(100);
        if (!exited) child.kill('SIGKILL');
      }
      out.end();
      if (database) {
        await run('psql', [POSTGRES_URL, '-Atc', `DROP DATABASE IF EXISTS ${database} WITH (FORCE)`]).catch(() => {});
        await run('redis-cli', ['-u', REDIS_URL, '--scan', '--pattern', `${database}:*`]).then(async ({ stdout }) => {
          const keys = stdout.split('\n').filter(Boolean);
          if (keys.length) await run('redis-cli', ['-u', REDIS_URL, 'del', ...keys]);
        }).catch(() => {});
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };

  // Ready when the discovery document answers (the HTTP listener starts after migrations).
  const until = Date.now() + 60000;
  for (;;) {
    if (exited) throw new Error(`lanyard serve exited ${JSON.stringify(exited)}; see ${log}`);
    try {
      const r = await fetch(`${issuer}/.well-known/openid-configuration`);
      if (r.ok) break;
    } catch { /* not yet */ }
    if (Date.now() > until) {
      await server.stop();
      throw new Error(`lanyard serve did not answer within 60 s; see ${log}`);
    }
    await sleep(150);
  }
  for (;;) {
    try {
      await run(lanyardBin(), ['health', '--endpoint', `http://${server.grpcAddr}`], { env: { PATH: process.env.PATH } });
      break;
    } catch (e) {
      if (Date.now() > until) throw new Error(`lanyard health never SERVING: ${e.stderr}`);
      await sleep(200);
    }
  }
  return server;
}

let authzDefinition;
const authzClients = new Map();
function authz(addr) {
  if (!authzDefinition) {
    const def = protoLoader.loadSync('lanyard/authz/v1/authz.proto', {
      includeDirs: [path.join(repo, 'proto')], keepCase: true, enums: String, longs: String, defaults: true, oneofs: true,
    });
    authzDefinition = grpc.loadPackageDefinition(def).lanyard.authz.v1;
  }
  if (!authzClients.has(addr)) {
    authzClients.set(addr, new authzDefinition.AuthorizationService(addr, grpc.credentials.createInsecure()));
  }
  return authzClients.get(addr);
}

export function closeGrpc() {
  for (const c of authzClients.values()) c.close();
  authzClients.clear();
}

/** Quoted-printable, as mailers write long lines. */
function unQuotedPrintable(text) {
  return text.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16)));
}

function parseEml(file) {
  const raw = readFileSync(file, 'utf8');
  const [head] = raw.split(/\r?\n\r?\n/);
  const header = (name) => {
    const m = head.match(new RegExp(`^${name}:\\s*(.*(?:\\r?\\n[ \\t].*)*)`, 'mi'));
    return m ? m[1].replace(/\r?\n[ \t]+/g, ' ').trim() : '';
  };
  let body = raw.slice(head.length);
  if (/quoted-printable/i.test(raw)) body = unQuotedPrintable(body);
  const b64 = [...raw.matchAll(/Content-Transfer-Encoding:\s*base64\r?\n(?:[^\r\n]+\r?\n)*\r?\n([A-Za-z0-9+/=\r\n]+)/gi)];
  for (const m of b64) body += Buffer.from(m[1].replace(/\s+/g, ''), 'base64').toString('utf8');
  const link = body.match(/https?:\/\/[^\s"'<>]+/g)?.find((u) => /\/invite\/|token=/.test(u));
  return { file, to: header('To'), subject: header('Subject'), link: link?.replace(/&amp;/g, '&'), body };
}
