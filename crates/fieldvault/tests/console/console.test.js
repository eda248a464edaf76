// Drives the web console in Debian's Chromium (playwright-core, no downloaded browser) against a
// running server. Started by crates/fieldvault/tests/it/console.rs, which passes:
//   FV_BASE              the server's base URL
//   FV_ADMIN             an administrator's username (password FV_PASSWORD)
//   FV_ADMIN_ID          its account id
//   FV_ADMIN_CODES       comma-separated recovery codes of that administrator's second factor
//   FV_SCREENSHOTS       where to write one PNG per page (docs/screenshots)
// Exits non-zero with a message on the first failed check.
'use strict';

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const zlib = require('node:zlib');
const { chromium } = require('playwright-core');
const { PNG } = require('pngjs');
const jsQR = require('jsqr');

const BASE = process.env.FV_BASE;
const ADMIN = process.env.FV_ADMIN;
const PASSWORD = process.env.FV_PASSWORD;
const ADMIN_ID = process.env.FV_ADMIN_ID;
const ADMIN_CODES = (process.env.FV_ADMIN_CODES || '').split(',').filter(Boolean);
const SHOTS = process.env.FV_SCREENSHOTS;
const CHROMIUM = process.env.FV_CHROMIUM || '/usr/bin/chromium';

const WEAK = 'password1';
const STRONG = 'Quokka-tundra-marble-41';

const FORM_XML = `<?xml version="1.0"?>
<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml" xmlns:jr="http://openrosa.org/javarosa">
  <h:head>
    <h:title>Household</h:title>
    <model>
      <instance>
        <data id="household" version="1">
          <name/>
          <age/>
          <phone/>
          <meta><instanceID/></meta>
        </data>
      </instance>
      <bind nodeset="/data/name" type="string"/>
      <bind nodeset="/data/age" type="int"/>
      <bind nodeset="/data/phone" type="string"/>
      <bind nodeset="/data/meta/instanceID" type="string" readonly="true()" calculate="concat('uuid:', uuid())"/>
    </model>
  </h:head>
  <h:body>
    <input ref="/data/name"><label>Name</label></input>
    <input ref="/data/age"><label>Age</label></input>
    <input ref="/data/phone"><label>Phone</label></input>
  </h:body>
</h:html>
`;

function step(what) {
  process.stdout.write(`console test: ${what}\n`);
}

// RFC 6238 (HMAC-SHA1, 6 digits, 30 s), as an authenticator app computes it.
function totp(base32, unixMs = Date.now()) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let value = 0;
  const bytes = [];
  for (const ch of base32.replace(/=+$/, '').toUpperCase()) {
    value = (value << 5) | alphabet.indexOf(ch);
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      bytes.push((value >>> bits) & 0xff);
    }
  }
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(unixMs / 30000)));
  const mac = crypto.createHmac('sha1', Buffer.from(bytes)).update(counter).digest();
  const off = mac[mac.length - 1] & 0x0f;
  const n = ((mac[off] & 0x7f) << 24) | (mac[off + 1] << 16) | (mac[off + 2] << 8) | mac[off + 3];
  return String(n % 1000000).padStart(6, '0');
}

// Every page the test photographs is also checked: each field has a label.
async function shot(page, name) {
  const unlabelled = await page.evaluate(() => Array.from(document.querySelectorAll('input, select, textarea'))
    .filter((e) => e.type !== 'hidden' && !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
    .map((e) => e.id || e.name || e.outerHTML.slice(0, 80)));
  assert.deepEqual(unlabelled, [], `unlabelled fields on ${name}`);
  if (!SHOTS) return;
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

// A submission as ODK Collect sends it: multipart with xml_submission_file.
// With `deprecatedId`, an edit of that version (as Collect sends one).
async function submit(serverUrl, instanceId, name, age, phone, deprecatedId) {
  const deprecated = deprecatedId ? `<deprecatedID>${deprecatedId}</deprecatedID>` : '';
  const xml = `<?xml version="1.0"?><data id="household" version="1" xmlns:jr="http://openrosa.org/javarosa">` +
    `<name>${name}</name><age>${age}</age><phone>${phone}</phone>` +
    `<meta><instanceID>${instanceId}</instanceID>${deprecated}</meta></data>`;
  const body = new FormData();
  body.append('xml_submission_file', new Blob([xml], { type: 'text/xml' }), 'submission.xml');
  const r = await fetch(`${serverUrl}/submission`, {
    method: 'POST',
    headers: { 'X-OpenRosa-Version': '1.0' },
    body,
  });
  assert.equal(r.status, 201, `OpenRosa submission answered ${r.status}: ${await r.text()}`);
}

async function login(page, username, password, code) {
  await page.goto(`${BASE}/console/login`);
  await page.fill('#login-username', username);
  await page.fill('#login-password', password);
  await page.click('#login-form button[type="submit"]');
  if (code) {
    await page.locator('#login-code').waitFor({ state: 'visible' });
    await page.fill('#login-code', code);
    await page.click('#login-form button[type="submit"]');
  }
  await page.waitForURL(/\/console\/projects$/);
}

async function main() {
  assert.ok(BASE && ADMIN && ADMIN_ID && PASSWORD && ADMIN_CODES.length >= 2, 'FV_BASE, FV_ADMIN, FV_PASSWORD and FV_ADMIN_CODES are required');
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run'],
  });
  const violations = [];
  const watch = (page) => {
    page.on('console', (m) => {
      if (m.type() === 'error') violations.push(m.text());
    });
    page.on('pageerror', (e) => violations.push(String(e)));
  };
  try {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
    const page = await ctx.newPage();
    watch(page);

    // ---- sign up: weak password refused, meter changes, strong one accepted ----
    step('sign up');
    const resp = await page.goto(`${BASE}/console/signup`);
    const csp = resp.headers()['content-security-policy'] || '';
    assert.match(csp, /script-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline/);
    await page.fill('#signup-username', 'alice');
    await page.fill('#signup-password', WEAK);
    const meter = page.locator('.meter[data-meter-for="signup-password"]');
    await page.waitForFunction(() => document.querySelector('.meter[data-meter-for="signup-password"]').dataset.score !== undefined);
    const weakScore = Number(await meter.getAttribute('data-score'));
    assert.equal(await meter.getAttribute('data-acceptable'), 'false');
    assert.ok(weakScore <= 2, `weak score ${weakScore}`);
    assert.match(await meter.locator('.meter-label').textContent(), /does not meet/);
    assert.ok(await meter.locator('.meter-suggestions li, .meter-unmet li, .meter-warning').count() > 0);
    await shot(page, 'signup-weak');
    await page.click('#signup-form button[type="submit"]');
    const problem = page.locator('#signup-form .problem');
    await problem.waitFor({ state: 'visible' });
    assert.match(await problem.textContent(), /^400 invalid: /);
    assert.ok(page.url().endsWith('/console/signup'), 'the weak password was refused');
    await page.fill('#signup-password', STRONG);
    await page.waitForFunction(() => document.querySelector('.meter[data-meter-for="signup-password"]').dataset.acceptable === 'true');
    const strongScore = Number(await meter.getAttribute('data-score'));
    assert.ok(strongScore >= 3 && strongScore > weakScore, `strong score ${strongScore}`);
    await shot(page, 'signup');
    await page.click('#signup-form button[type="submit"]');
    await page.waitForURL(/\/console\/account$/);

    // ---- account: 2FA enrolment with a code computed here, recovery codes, an API token ----
    step('two-factor enrolment');
    await page.click('#tfa-start');
    await page.locator('#tfa-secret').waitFor({ state: 'visible' });
    const secret = (await page.textContent('#tfa-secret')).trim();
    assert.match(secret, /^[A-Z2-7]+=*$/);
    assert.ok((await page.getAttribute('#tfa-qr', 'src')).startsWith('data:image/svg+xml;base64,'));
    await page.fill('#tfa-code', totp(secret));
    await page.click('#tfa-confirm-form button[type="submit"]');
    await page.locator('#tfa-recovery').waitFor({ state: 'visible' });
    const recovery = await page.locator('#tfa-recovery-codes li').allTextContents();
    assert.equal(recovery.length, 10);
    step('change password: the meter again, a weak one refused');
    await page.fill('#pw-current', STRONG);
    await page.fill('#pw-new', WEAK);
    await page.waitForFunction(() => document.querySelector('.meter[data-meter-for="pw-new"]').dataset.acceptable === 'false');
    await page.click('#password-form button[type="submit"]');
    await page.locator('#password-form .problem').waitFor({ state: 'visible' });
    assert.match(await page.textContent('#password-form .problem'), /^400 invalid: /);
    await page.fill('#pw-current', '');
    await page.fill('#pw-new', '');
    step('API token');
    await page.fill('#token-name', 'pull script');
    await page.click('#token-form button[type="submit"]');
    await page.locator('#token-created').waitFor({ state: 'visible' });
    assert.match(await page.textContent('#token-value'), /^fvt_/);
    await page.locator('#token-table tbody tr', { hasText: 'pull script' }).waitFor();
    await page.locator('#session-created').filter({ hasNotText: '…' }).waitFor();
    await page.locator('#notice-list li', { hasText: 'No notices.' }).waitFor();

    // ---- a script over its budget: the token is restricted, its owner is told ----
    // The server runs with 4 s windows, an API budget of 80, restriction after 2× the budget in
    // 3 consecutive windows, mode `suspended` (console.rs). 64 parallel loops keep far above
    // 160 attempts a window until the token's requests answer 403 `restricted`.
    step('sustained excess restricts the API token');
    const apiToken = (await page.textContent('#token-value')).trim();
    const hammer = async () => {
      const started = Date.now();
      let restricted = false;
      const statuses = new Map();
      const worker = async () => {
        while (!restricted && Date.now() - started < 90000) {
          try {
            const r = await fetch(`${BASE}/v1/projects`, { headers: { Authorization: `Bearer ${apiToken}` } });
            const body = await r.text();
            statuses.set(r.status, (statuses.get(r.status) || 0) + 1);
            if (r.status === 403 && JSON.parse(body).code === 'restricted') restricted = true;
          } catch (e) {
            statuses.set('error', (statuses.get('error') || 0) + 1);
          }
        }
      };
      await Promise.all(Array.from({ length: 64 }, worker));
      assert.ok(restricted, `no restriction after 90 s of sustained excess: ${JSON.stringify([...statuses])}`);
      step(`restricted after ${Date.now() - started} ms (${JSON.stringify([...statuses])})`);
    };
    await hammer();
    // The token's admitted requests also drew on alice's budget: let that window end.
    await new Promise((r) => setTimeout(r, 4100));
    step('the notice on the account page, marked read');
    await page.reload();
    const notice = page.locator('#notice-list li.unread[data-kind^="restriction"]');
    await notice.waitFor();
    assert.match(await notice.textContent(), /token/);
    await page.locator('#notices-read').waitFor({ state: 'visible' });
    await shot(page, 'account');
    await page.click('#notices-read');
    await page.locator('#notice-list li.read[data-kind^="restriction"]').waitFor();
    assert.equal(await page.locator('#notice-list li.unread').count(), 0);
    assert.ok(await page.locator('#notices-read').isHidden(), 'nothing left to mark read');

    // ---- log in again: the second-factor step ----
    step('log in with the second factor');
    await page.click('#logout');
    await page.waitForURL(/\/console\/login/);
    await page.fill('#login-username', 'alice');
    await page.fill('#login-password', STRONG);
    await page.click('#login-form button[type="submit"]');
    await page.locator('#login-code').waitFor({ state: 'visible' });
    await shot(page, 'login');
    await page.fill('#login-code', recovery[0].trim());
    await page.click('#login-form button[type="submit"]');
    await page.waitForURL(/\/console\/projects$/);

    // ---- projects, a form, a collector with its QR code ----
    step('create a project');
    await page.fill('#project-name', 'Household survey');
    await page.click('#project-form button[type="submit"]');
    await page.waitForURL(/\/console\/projects\/\d+$/);
    const pid = page.url().split('/').pop();
    step('upload a form');
    await page.locator('#form-table tbody tr').first().waitFor();
    await page.setInputFiles('#form-file', { name: 'household.xml', mimeType: 'application/xml', buffer: Buffer.from(FORM_XML) });
    await page.click('#form-upload button[type="submit"]');
    await page.locator('#form-upload .ok').waitFor({ state: 'visible' });
    await page.locator('#form-table tbody tr', { hasText: 'household' }).waitFor();
    await page.locator('#collector-forms input[value="household"]').waitFor();

    step('create a collector and decode its QR code');
    await page.fill('#collector-name', 'Team A');
    await page.click('#collector-form button[type="submit"]');
    await page.locator('#collector-qr').waitFor({ state: 'visible' });
    const payload = await page.getAttribute('#collector-qr', 'data-payload');
    const settings = JSON.parse(zlib.inflateSync(Buffer.from(payload, 'base64')).toString('utf8'));
    const serverUrl = settings.general.server_url;
    assert.match(serverUrl, new RegExp(`^${BASE.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}/v1/key/[^/]+/projects/${pid}$`));
    assert.equal(settings.project.name, 'Household survey');
    await page.waitForFunction(() => {
      const img = document.querySelector('#collector-qr-img');
      return img.complete && img.naturalWidth > 0;
    });
    const png = PNG.sync.read(await page.locator('#collector-qr-img').screenshot());
    const decoded = jsQR(new Uint8ClampedArray(png.data), png.width, png.height);
    assert.ok(decoded, 'the QR code in the page could not be decoded');
    assert.equal(decoded.data, payload, 'the QR code carries the settings payload');
    await page.locator('#collector-table tbody tr', { hasText: 'Team A' }).waitFor();
    await shot(page, 'project');

    // ---- OpenRosa: submit as the collector's device would ----
    step('submit over OpenRosa');
    const formList = await fetch(`${serverUrl}/formList`, { headers: { 'X-OpenRosa-Version': '1.0' } });
    assert.equal(formList.status, 200);
    assert.match(await formList.text(), /household/);
    await submit(serverUrl, 'uuid:11111111-1111-4111-8111-111111111111', 'Ann', 34, '555-0101');
    await submit(serverUrl, 'uuid:22222222-2222-4222-8222-222222222222', 'Bob', 51, '555-0102');
    await submit(serverUrl, 'uuid:33333333-3333-4333-8333-333333333333', 'Cy', 27, '555-0103');

    // ---- data: table, sort, filter, export, redaction, bulk delete ----
    step('submissions table');
    await page.click('#form-table a:text("Household")');
    await page.waitForURL(/\/forms\/household$/);
    const rows = page.locator('#subs-table tbody tr[data-id]');
    await page.waitForFunction(() => document.querySelectorAll('#subs-table tbody tr[data-id]').length === 3);
    assert.match(await page.textContent('#subs-count'), /^3 submissions/);
    await page.click('#subs-table th button.sort:text-is("name")');
    await page.waitForFunction(() => document.querySelector('#subs-table th[aria-sort]'));
    await page.waitForFunction(() => document.querySelector('#subs-table tbody tr[data-id] td:nth-child(4)')?.textContent === 'Ann');
    await page.click('#subs-table th button.sort:text("name")');
    await page.waitForFunction(() => document.querySelector('#subs-table tbody tr[data-id] td:nth-child(4)')?.textContent === 'Cy');
    await page.fill('input[aria-label="Filter name"]', 'bob');
    await page.press('input[aria-label="Filter name"]', 'Enter');
    await page.waitForFunction(() => document.querySelectorAll('#subs-table tbody tr[data-id]').length === 1);
    assert.equal(await rows.first().locator('td:nth-child(4)').textContent(), 'Bob');
    await page.fill('input[aria-label="Filter name"]', '');
    await page.press('input[aria-label="Filter name"]', 'Enter');
    await page.waitForFunction(() => document.querySelectorAll('#subs-table tbody tr[data-id]').length === 3);
    await page.locator('#redact-fields input[value="phone"]').waitFor();
    await shot(page, 'form-data');

    step('export and download');
    await page.click('#export-form button[type="submit"]');
    const link = page.locator('#export-table a.download').first();
    await link.waitFor({ timeout: 60000 });
    const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
    const csv = fs.readFileSync(await download.path(), 'utf8');
    assert.match(csv, /Ann/);
    assert.match(csv, /555-0102/);

    step('redaction with its dry run');
    await page.check('#redact-fields input[value="phone"]');
    await page.click('#redact-preview');
    await page.locator('#redact-confirm').waitFor({ state: 'visible' });
    assert.equal(await page.getAttribute('#redact-summary', 'data-count'), '3');
    assert.match(await page.textContent('#redact-summary'), /^Dry run: 3 submission/);
    await page.check('#redact-sure');
    await page.click('#redact-run');
    await page.locator('#redact-done').waitFor({ state: 'visible' });
    assert.match(await page.textContent('#redact-done'), /3 submission\(s\) changed/);
    const after = await page.evaluate(async (uid) => {
      const r = await fetch(`/api/v2/assets/${uid}/data/`, { headers: { Accept: 'application/json' } });
      return (await r.json()).results.map((x) => x.phone || null);
    }, await page.getAttribute('#ctx', 'data-asset-uid'));
    assert.deepEqual(after, [null, null, null], 'phone numbers are gone');

    step('bulk delete');
    const cy = rows.filter({ hasText: 'Cy' });
    await cy.locator('input[type="checkbox"]').check();
    await page.check('#bulk-delete-confirm');
    await page.click('#bulk-delete-form button[type="submit"]');
    await page.locator('#bulk-delete-form .ok').waitFor({ state: 'visible' });
    await page.waitForFunction(() => document.querySelectorAll('#subs-table tbody tr[data-id]').length === 2);

    step('an edit over OpenRosa, the edit history');
    await submit(serverUrl, 'uuid:44444444-4444-4444-8444-444444444444', 'Ann', 35, '555-0111',
      'uuid:11111111-1111-4111-8111-111111111111');
    await page.reload();
    await page.waitForFunction(() => document.querySelectorAll('#subs-table tbody tr[data-id]').length === 2);
    await rows.filter({ hasText: 'Ann' }).locator('a:text("Open")').click();
    await page.waitForURL(/\/submissions\/uuid%3A11111111-1111-4111-8111-111111111111$/);
    await page.locator('#sub-data dt', { hasText: 'name' }).waitFor();
    const versions = page.locator('#sub-history li.version');
    await page.waitForFunction(() => document.querySelectorAll('#sub-history li.version').length === 2);
    assert.equal(await versions.nth(0).getAttribute('data-instance-id'), 'uuid:44444444-4444-4444-8444-444444444444');
    assert.match(await versions.nth(0).textContent(), /^Edited .* by Team A .*current version$/);
    assert.equal(await versions.nth(1).getAttribute('data-instance-id'), 'uuid:11111111-1111-4111-8111-111111111111');
    assert.match(await versions.nth(1).textContent(), /^Received .* by Team A/);
    step('one submission, review state');
    await page.selectOption('#review-state', 'approved');
    await page.click('#review-form button[type="submit"]');
    await page.locator('#review-form .ok').waitFor({ state: 'visible' });
    await page.reload();
    await page.locator('#sub-meta dd', { hasText: 'approved' }).waitFor();
    await shot(page, 'submission');

    step('sharing and encryption');
    await page.goto(`${BASE}/console/projects/${pid}`);
    await page.locator('#role-table tbody tr[data-role="manager"]', { hasText: 'alice' }).waitFor();
    const adminRow = page.locator(`#role-table tbody tr[data-actor-id="${ADMIN_ID}"][data-role="viewer"]`);
    const shareAdmin = async () => {
      await page.fill('#share-user', ADMIN_ID);
      await page.selectOption('#share-role', 'viewer');
      await page.click('#share-form button[type="submit"]');
      await page.locator('#share-form .ok').waitFor({ state: 'visible' });
      await adminRow.waitFor();
    };
    await shareAdmin();
    assert.match(await adminRow.textContent(), new RegExp(`^${ADMIN}${ADMIN_ID}Viewer`));
    await adminRow.locator('button', { hasText: 'Revoke' }).click();
    await adminRow.waitFor({ state: 'detached' });
    step('the last manager cannot be revoked');
    await page.locator('#role-table tbody tr[data-role="manager"] button').click();
    await page.locator('#roles-problem', { hasText: 'only manager' }).waitFor();
    assert.match(await page.textContent('#roles-problem'), /^400 invalid: /);
    await shareAdmin();
    const pem = fs.readFileSync(path.join(__dirname, '../fixtures/collect-rsa2048-public.pem'), 'utf8');
    await page.fill('#enc-key', pem.split('\n').filter((l) => l && !l.startsWith('-----')).join(''));
    await page.click('#enc-form button[type="submit"]');
    await page.locator('#enc-status', { hasText: 'Encrypted since' }).waitFor();
    await page.locator('#enc-off').waitFor({ state: 'visible' });
    step('project history for its manager');
    await page.reload();
    await page.locator('#history-table tbody tr', { hasText: 'project.create' }).waitFor();
    await page.locator('#history-table tbody tr', { hasText: 'app_user.create' }).waitFor();
    await page.locator('#history-table tbody tr', { hasText: 'project.key.set' }).first().waitFor();

    await page.goto(`${BASE}/console/projects`);
    await page.locator('#project-list a', { hasText: 'Household survey' }).waitFor();
    await shot(page, 'projects');

    // ---- a phone-sized screen ----
    step('phone-sized pages');
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
    const p2 = await phone.newPage();
    watch(p2);
    await p2.goto(`${BASE}/console/signup`);
    await p2.fill('#signup-username', 'someone');
    await p2.fill('#signup-password', 'tr0ub4dor');
    await p2.waitForFunction(() => document.querySelector('.meter[data-meter-for="signup-password"]').dataset.score !== undefined);
    await shot(p2, 'phone-signup');
    await login(p2, 'alice', STRONG, recovery[1].trim());
    await p2.goto(`${BASE}/console/projects/${pid}`);
    await p2.locator('#form-table tbody tr', { hasText: 'household' }).waitFor();
    await shot(p2, 'phone-project');
    const scrollWidth = await p2.evaluate(() => document.documentElement.scrollWidth);
    const wide = await p2.evaluate(() => Array.from(document.querySelectorAll('body *'))
      .filter((e) => e.getBoundingClientRect().right > 391 && !e.closest('.table-wrap'))
      .slice(0, 5).map((e) => `${e.tagName}#${e.id}.${e.className}`));
    assert.ok(scrollWidth <= 390, `the project page fits a phone (${scrollWidth}px wide: ${wide.join(', ')})`);
    await p2.goto(`${BASE}/console/projects/${pid}/forms/household`);
    await p2.waitForFunction(() => document.querySelectorAll('#subs-table tbody tr[data-id]').length === 2);
    await shot(p2, 'phone-form-data');
    assert.ok(await p2.evaluate(() => document.documentElement.scrollWidth) <= 390, 'the data page fits a phone');
    step('sessions: both browsers are listed, this one marked');
    await p2.goto(`${BASE}/console/account`);
    await p2.waitForFunction(() => document.querySelectorAll('#session-table tbody tr').length >= 2);
    await p2.locator('#session-table tbody tr', { hasText: 'this one' }).waitFor();
    assert.equal(await p2.locator('#session-table tbody tr', { hasText: 'this one' }).count(), 1);
    step('log out everywhere');
    await p2.click('#logout-all');
    await p2.waitForURL(/\/console\/login/);
    await page.goto(`${BASE}/console/account`);
    await page.waitForURL(/\/console\/login\?next=/);
    await phone.close();

    // ---- admin: health, audit chain, suspend a user ----
    step('administration');
    // Keyboard only: the username field has focus, Tab moves on, Enter submits.
    await page.goto(`${BASE}/console/login?next=%2Fconsole%2Fadmin`);
    await page.keyboard.type(ADMIN);
    await page.keyboard.press('Tab');
    await page.keyboard.type(PASSWORD);
    await page.keyboard.press('Enter');
    await page.locator('#login-code').waitFor({ state: 'visible' });
    assert.equal(await page.evaluate(() => document.activeElement.id), 'login-code');
    await page.keyboard.type(ADMIN_CODES[0]);
    await page.keyboard.press('Enter');
    await page.waitForURL(/\/console\/admin$/);
    await page.locator('#audit-chain.ok').waitFor();
    assert.match(await page.textContent('#audit-chain'), /intact/);
    await page.locator('#health-status', { hasText: 'ok' }).waitFor();

    step('lift the token\'s restriction');
    const stillRestricted = await fetch(`${BASE}/v1/projects`, { headers: { Authorization: `Bearer ${apiToken}` } });
    assert.equal(stillRestricted.status, 403, 'the restricted token is refused');
    const activeRow = page.locator('#restriction-table tbody tr[data-active="true"][data-subject^="token:"]');
    await activeRow.waitFor();
    assert.match(await activeRow.textContent(), /suspended/);
    await activeRow.locator('button', { hasText: 'Lift' }).click();
    await page.locator('#restrictions .ok').waitFor({ state: 'visible' });
    const liftedRow = page.locator('#restriction-table tbody tr[data-active="false"][data-subject^="token:"]');
    await liftedRow.waitFor();
    assert.match(await liftedRow.textContent(), new RegExp(`lifted .* by user:${ADMIN}`));
    assert.equal(await page.locator('#restriction-table tbody tr[data-active="true"]').count(), 0);
    // The lift reaches the budget checker within its one-second reload.
    let freed = 0;
    for (let i = 0; i < 50 && freed !== 200; i++) {
      await new Promise((r) => setTimeout(r, 200));
      freed = (await fetch(`${BASE}/v1/projects`, { headers: { Authorization: `Bearer ${apiToken}` } })).status;
    }
    assert.equal(freed, 200, 'the token works again once lifted');
    await page.locator('#audit-table tbody tr', { hasText: 'restriction.create' }).first().waitFor();

    step('the account list: filter, suspend from a row');
    await page.locator('#user-table tbody tr[data-username="root"]').waitFor();
    await page.locator('#user-table tbody tr[data-username="alice"] td.state-active').waitFor();
    await page.fill('#user-list-q', 'ALI');
    await page.click('#user-list-form button[type="submit"]');
    await page.waitForFunction(() => {
      const rows = document.querySelectorAll('#user-table tbody tr[data-user-id]');
      return rows.length === 1 && rows[0].dataset.username === 'alice';
    });
    await page.click('#user-table button[aria-label="Suspend alice"]');
    await page.locator('#user-table tbody tr[data-username="alice"] td.state-suspended').waitFor();
    await page.fill('#user-list-q', 'nobody-like-this');
    await page.click('#user-list-form button[type="submit"]');
    await page.locator('#user-table tbody td', { hasText: 'No account matches' }).waitFor();
    await page.fill('#user-list-q', '');
    await page.click('#user-list-form button[type="submit"]');
    await page.locator('#user-table tbody tr[data-username="root"]').waitFor();
    await page.click('#user-table a[aria-label="Manage alice"]');
    await page.locator('#user-card').waitFor();
    assert.equal(await page.textContent('#user-state'), 'suspended');
    assert.equal(await page.inputValue('#user-query'), await page.getAttribute('#user-card', 'data-user-id'));
    await page.locator('#audit-table tbody tr', { hasText: 'user.suspend' }).first().waitFor();
    await shot(page, 'admin');
    const refused = await fetch(`${BASE}/v1/sessions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ email: 'alice', password: STRONG, code: recovery[2].trim() }),
    });
    assert.equal(refused.status, 401, 'a suspended account cannot sign in');

    step('project history is for managers: a viewer (here the administrator) does not see it');
    await page.goto(`${BASE}/console/projects/${pid}`);
    await page.locator('#form-table').waitFor();
    await page.waitForLoadState('networkidle');
    assert.equal(await page.locator('#history-section').isHidden(), true);
    await page.goto(`${BASE}/console/admin`);

    step('invite link, accepted in another browser');
    await page.fill('#invite-username', 'bea');
    await page.click('#invite-form button[type="submit"]');
    await page.locator('#invite-link code').waitFor();
    const invite = await page.textContent('#invite-link code');
    assert.match(invite, /\/console\/signup#invite=fvi_/);
    const guest = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const p3 = await guest.newPage();
    watch(p3);
    await p3.goto(invite);
    assert.match(await p3.inputValue('#signup-invite'), /^fvi_/);
    await p3.fill('#signup-username', 'bea');
    await p3.fill('#signup-password', 'Lantern-orchid-93-vellum');
    await p3.waitForFunction(() => document.querySelector('.meter[data-meter-for="signup-password"]').dataset.acceptable === 'true');
    await p3.click('#signup-form button[type="submit"]');
    await p3.waitForURL(/\/console\/account$/);
    await guest.close();

    step('force a password reset');
    await page.goto(`${BASE}/console/admin?user=bea`);
    await page.click('button[data-admin-action="force-reset-on"]');
    await page.locator('button[data-admin-action="force-reset-off"]').waitFor();
    const forced = await fetch(`${BASE}/v1/sessions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ email: 'bea', password: 'Lantern-orchid-93-vellum' }),
    });
    assert.equal(forced.status, 403);
    assert.equal((await forced.json()).code, 'auth.password_reset_required');

    const csViolations = violations.filter((v) => /Content Security Policy|Refused to/i.test(v));
    assert.deepEqual(csViolations, [], 'no Content-Security-Policy violations');
    const scriptErrors = violations.filter((v) => !/Failed to load resource/.test(v));
    assert.deepEqual(scriptErrors, [], 'no script errors');
    step('all checks passed');
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  process.stderr.write(`console test failed: ${e && e.stack || e}\n`);
  process.exit(1);
});
