#!/usr/bin/env node
// Compiles every pipeline wgnn dumped (WGNN_DUMP_WGSL=DIR) with Dawn, the WebGPU implementation
// of Chrome and Edge, whose WGSL compiler (Tint) is stricter than naga: for each dump, a shader
// module (its compilation messages, with file and line) and a compute pipeline with the dump's
// override constants and pipeline layout, under validation and internal error scopes (the
// checks themselves are pipeline_check.mjs, shared with the browser page).
//
//   node check.mjs [--verbose] [--every-target] [--chromium PATH] [--shaders DIR] DUMP_DIR...
//
// --verbose names every pipeline as it is checked; --shaders (default ../../shaders) is where the
// engine's WGSL files are, so that a message names the file and line to edit beside the dump's;
// --chromium is the browser (default /usr/bin/chromium, Debian's package).
//
// Where, in order of preference: Dawn's OpenGL ES backend on Mesa's llvmpipe through Node (npm
// `webgpu`; `compatibility` feature level; Dawn's Vulkan backend refuses lavapipe 22.3): Tint's
// front end and GLSL back end, the driver's GLSL compiler and linker. A pipeline that adapter
// cannot take (it offers no subgroups) goes to headless Chromium's own WebGPU (chromium.mjs),
// on SwiftShader's Vulkan at the `core` feature level: Tint's SPIR-V back end, SwiftShader's
// compiler. With --every-target, each pipeline is checked on every target that can take it
// instead of the first. A pipeline no target can take is listed as not checked, with why, and
// fails the run.
//
// Exit status: 0 when every pipeline compiled and its pipeline was created with no error
// (warnings are listed), 1 on any error or pipeline not checked, 2 on bad usage.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { openChromium, DEFAULT_CHROMIUM } from './chromium.mjs';
import { checkOne, describe, neededExtensions, openDevice, unfitFor } from './pipeline_check.mjs';

const script = fileURLToPath(import.meta.url);
const USAGE = 'usage: node check.mjs [--verbose] [--every-target] [--chromium PATH] [--shaders DIR] DUMP_DIR...';

function usage(why) {
  console.error(`${why}\n${USAGE}`);
  process.exit(2);
}

function parseArgs(argv) {
  const args = {
    shaders: path.resolve(path.dirname(script), '../../shaders'),
    chromium: DEFAULT_CHROMIUM,
    dirs: [],
    verbose: false,
    every: false,
  };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--shaders' || argv[i] === '--chromium') {
      if (i + 1 >= argv.length) usage(`${argv[i]} needs a value`);
      args[argv[i].slice(2)] = argv[++i];
    } else if (argv[i] === '--verbose') args.verbose = true;
    else if (argv[i] === '--every-target') args.every = true;
    else if (argv[i].startsWith('-')) usage(`unknown option ${argv[i]}`);
    else args.dirs.push(argv[i]);
  }
  if (args.dirs.length === 0) usage('no dump folder given');
  return args;
}

// One dump: its JSON's fields, its WGSL file and text (`label` the file, for messages), the
// extensions it uses.
function loadDump(jsonPath) {
  const info = JSON.parse(fs.readFileSync(jsonPath, 'utf8'));
  const file = path.join(path.dirname(jsonPath), info.wgsl);
  const code = fs.readFileSync(file, 'utf8');
  return { ...info, file, label: file, code, needs: neededExtensions(code) };
}

// Dawn through Node on llvmpipe's OpenGL ES; the instance is kept with the device: when the
// garbage collector frees it, dawn.node 0.6.2 frees what the device still uses, and the
// process aborts.
async function openDawnGles(wanted) {
  process.env.EGL_PLATFORM ??= 'surfaceless'; // Mesa's EGL without a display; read when Dawn opens EGL
  const { create, globals } = await import('webgpu');
  Object.assign(globalThis, globals);
  const gpu = create(['backend=opengles']);
  const adapter = await gpu.requestAdapter({ featureLevel: 'compatibility' });
  if (!adapter) {
    return { unavailable: 'Dawn found no OpenGL ES adapter (apt-get install libegl1 libgles2 libegl-mesa0 libgl1-mesa-dri)' };
  }
  const state = await openDevice(adapter, wanted);
  return {
    gpu,
    state,
    description: state.description,
    features: state.features,
    limits: state.limits,
    async check(dumps) {
      const reports = [];
      for (const d of dumps) reports.push(await checkOne(state, d));
      return reports;
    },
  };
}

// Where a pipeline can be checked, in order of preference.
const TARGETS = [
  { name: 'Dawn OpenGL ES (compatibility)', what: 'Tint front end, GLSL back end, the driver compiles and links',
    open: (args, wanted) => openDawnGles(wanted) },
  { name: 'Chromium WebGPU (core)', what: "Tint front end, SPIR-V back end, SwiftShader's Vulkan compiles",
    open: (args, wanted) => openChromium(args.chromium, wanted) },
];

// Checks every dump on the first target that can take it (or, with `every`, on each):
// { results: [{ dump, target, report }], unchecked: [{ dump, why }], opened }.
async function checkAll(dumps, args) {
  const wanted = [...new Set(dumps.flatMap((d) => d.needs.map((e) => e.feature)))];
  const checkedOn = dumps.map(() => 0);
  const whyNot = dumps.map(() => []);
  const results = [];
  const opened = [];
  for (const spec of TARGETS) {
    const pending = dumps.map((d, i) => i).filter((i) => args.every || checkedOn[i] === 0);
    if (pending.length === 0) continue;
    const target = await spec.open(args, wanted);
    if (target.unavailable) {
      for (const i of pending) whyNot[i].push(`${spec.name}: ${target.unavailable}`);
      continue;
    }
    Object.assign(target, { name: spec.name, what: spec.what, checked: 0 });
    opened.push(target);
    const taken = [];
    for (const i of pending) {
      const unfit = unfitFor(target.features, target.limits, dumps[i]);
      if (unfit) whyNot[i].push(`${spec.name} ${unfit}`);
      else taken.push(i);
    }
    if (args.verbose) for (const i of taken) console.log(`  ${spec.name}: ${describe(dumps[i])}`);
    let reports;
    try {
      reports = await target.check(taken.map((i) => dumps[i]));
    } catch (e) {
      // A browser that crashed or stopped answering: its pipelines are not checked.
      for (const i of taken) whyNot[i].push(`${spec.name} failed: ${e.message.split('\n')[0]}`);
      continue;
    }
    taken.forEach((i, k) => {
      results.push({ dump: dumps[i], target: spec.name, report: reports[k] });
      checkedOn[i]++;
    });
    target.checked = taken.length;
  }
  const unchecked = dumps.map((dump, i) => ({ dump, why: whyNot[i].join('; ') })).filter((u, i) => checkedOn[i] === 0);
  return { results, unchecked, opened };
}

// ---- the report ----

// The shader files whose whole text lies in `code` (the engine concatenates whole files and a
// few one-line preludes), so that a message names the file and line a developer edits.
function shaderPieces(code, shaders) {
  const pieces = [];
  for (const s of shaders) {
    const at = code.indexOf(s.text);
    if (at >= 0) pieces.push({ name: s.name, startLine: code.slice(0, at).split('\n').length, lines: s.text.split('\n').length });
  }
  return pieces;
}

// `p` from the working folder where it lies below it (shaders/x.wgsl from the repository's root).
function shortPath(p) {
  const relative = path.relative('.', p);
  return relative.startsWith('..') ? path.resolve(p) : relative;
}

function where(dump, shaders, line, col) {
  if (line <= 0) return dump.file;
  let at = `${dump.file}:${line}:${col}`;
  for (const p of shaderPieces(dump.code, shaders)) {
    if (line >= p.startLine && line < p.startLine + p.lines) at += ` (${p.name}:${line - p.startLine + 1})`;
  }
  return at;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const shaders = fs.existsSync(args.shaders)
    ? fs.readdirSync(args.shaders).filter((n) => n.endsWith('.wgsl')).sort()
      .map((n) => ({ name: shortPath(path.join(args.shaders, n)), text: fs.readFileSync(path.join(args.shaders, n), 'utf8') }))
    : [];
  const jsonPaths = [];
  for (const dir of args.dirs) {
    if (!fs.existsSync(dir)) usage(`dump folder ${dir} does not exist`);
    for (const name of fs.readdirSync(dir).sort()) {
      if (name.endsWith('.json') && !name.startsWith('.')) jsonPaths.push(path.join(dir, name));
    }
  }
  if (jsonPaths.length === 0) {
    console.error(`no dumps in ${args.dirs.join(', ')}: run the tests with WGNN_DUMP_WGSL set`);
    process.exit(1);
  }
  const dumps = jsonPaths.map((p) => loadDump(p));
  const started = Date.now();
  const { results, unchecked, opened } = await checkAll(dumps, args);
  const seconds = ((Date.now() - started) / 1000).toFixed(1);

  let errors = 0;
  let warnings = 0;
  for (const { dump, target, report } of results) {
    for (const r of report) {
      console.log(`${where(dump, shaders, r.line, r.col)}: ${r.severity}: ${r.text}\n    in ${describe(dump)}, on ${target}`);
      if (r.severity === 'error') errors++;
      else warnings++;
    }
  }
  for (const t of opened) {
    console.log(`${t.name} on ${t.description}, features [${[...t.features].join(', ')}]: ${t.checked} pipelines (${t.what})`);
  }
  const families = new Set(dumps.map((d) => d.family));
  console.log(`${dumps.length - unchecked.length} of ${dumps.length} pipelines (${families.size} kernel families) ` +
    `compiled and created by Dawn/Tint in ${seconds} s: ${errors} errors, ${warnings} warnings, ` +
    `${unchecked.length} not checked`);
  for (const { dump, why } of unchecked) console.log(`  not checked (${why}): ${dump.file} ${describe(dump)}`);
  for (const t of opened) await t.close?.();
  // Exits at once: nothing made on Dawn's devices under Node is destroyed first.
  process.exit(errors > 0 || unchecked.length > 0 ? 1 : 0);
}

await main();
