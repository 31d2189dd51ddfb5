#!/usr/bin/env node
// Compiles every pipeline wgnn dumped (WGNN_DUMP_WGSL=DIR) with Dawn, the WebGPU implementation
// of Chrome and Edge, whose WGSL compiler (Tint) is stricter than naga: for each dump, a shader
// module (its compilation messages, with file and line) and a compute pipeline with the dump's
// override constants and pipeline layout, under validation and internal error scopes.
//
//   node check.mjs [--verbose] [--shaders DIR] DUMP_DIR...
//
// --verbose names every pipeline as it is checked; --shaders (default ../../shaders) is where the
// engine's WGSL files are, so that a message names the file and line to edit beside the dump's.
//
// Where: Dawn's OpenGL ES backend on Mesa's llvmpipe (`compatibility` feature level; Dawn's
// Vulkan backend refuses lavapipe 22.3), which runs Tint's front end, its GLSL back end and the
// driver's GLSL compiler and linker. A pipeline that needs a feature that adapter lacks
// (subgroups) goes to Dawn's null backend at the `core` feature level: Tint's front end and
// Dawn's validation with the constants substituted, no code generation. A pipeline neither can
// take is listed as not checkable here, and fails the run.
//
// Exit status: 0 when every pipeline compiled and linked with no error (warnings are listed),
// 1 on any error or pipeline not checked, 2 on bad usage.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const script = fileURLToPath(import.meta.url);

// Where a pipeline can be checked, in order of preference.
const TARGETS = [
  { name: 'Dawn OpenGL ES (compatibility)', backend: 'opengles', level: 'compatibility',
    what: 'Tint front end, GLSL back end, the driver compiles and links' },
  { name: 'Dawn null backend (core)', backend: 'null', level: 'core',
    what: "Tint front end and Dawn's validation with the constants substituted; no code generation" },
];

// WGSL's enable-extensions a pipeline needs, with the WebGPU feature behind each. naga (wgpu
// 30) refuses `enable subgroups;` (it parses it as not implemented) and turns the subgroup
// built-ins on with the device feature alone, so the engine's sources call them without the
// directive, which Tint requires: the checker adds it where it is missing.
const EXTENSIONS = [
  { directive: 'subgroups', feature: 'subgroups', uses: /\bsubgroup[A-Z]\w*\s*\(|@builtin\(\s*subgroup_/ },
  { directive: 'f16', feature: 'shader-f16', uses: /\bf16\b|\bvec[234]h\b|\bmat[234]x[234]h\b/ },
];

function usage(why) {
  console.error(`${why}\nusage: node check.mjs [--verbose] [--shaders DIR] DUMP_DIR...`);
  process.exit(2);
}

function parseArgs(argv) {
  const args = { shaders: path.resolve(path.dirname(script), '../../shaders'), dirs: [], verbose: false };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--shaders') args.shaders = argv[++i];
    else if (argv[i] === '--verbose') args.verbose = true;
    else if (argv[i].startsWith('-')) usage(`unknown option ${argv[i]}`);
    else args.dirs.push(argv[i]);
  }
  if (args.dirs.length === 0) usage('no dump folder given');
  return args;
}

// One dump: its JSON's fields, its WGSL file and text, the extensions it uses.
function loadDump(jsonPath) {
  const info = JSON.parse(fs.readFileSync(jsonPath, 'utf8'));
  const file = path.join(path.dirname(jsonPath), info.wgsl);
  const code = fs.readFileSync(file, 'utf8');
  return { ...info, file, code, needs: EXTENSIONS.filter((e) => e.uses.test(code)) };
}

function describe(dump) {
  const constants = Object.entries(dump.constants).map(([k, v]) => `${k}=${v}`).join(' ');
  return `${dump.family}::${dump.entry_point}${constants ? ` [${constants}]` : ''}`;
}

// ---- checking: each dump on the first target whose device has the features it needs ----

async function openTarget(create, target, wanted) {
  // The instance is kept with the device: when the garbage collector frees it, dawn.node 0.6.2
  // frees what the device still uses, and the process aborts.
  const gpu = create([`backend=${target.backend}`]);
  const adapter = await gpu.requestAdapter({ featureLevel: target.level });
  if (!adapter) return null;
  // The adapter's own limits, and the features the dumps need where it has them.
  const requiredLimits = {};
  for (const key in adapter.limits) requiredLimits[key] = adapter.limits[key];
  const requiredFeatures = wanted.filter((f) => adapter.features.has(f));
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures });
  const uncaptured = [];
  device.onuncapturederror = (e) => uncaptured.push(e.error.message);
  const description = [adapter.info.vendor, adapter.info.architecture, adapter.info.description]
    .filter(Boolean).join(' ').trim() || 'no description';
  return { ...target, gpu, adapter, device, features: new Set(requiredFeatures), description, uncaptured, checked: 0 };
}

// The messages of compiling one dump on `target`'s device: [{ severity, line, col, text }]
// (line and col in the dump, 0 where the message has no place).
async function checkOne(target, dump) {
  const { device } = target;
  const report = [];
  const enables = dump.needs.filter((e) => !new RegExp(`^\\s*enable\\s+${e.directive}\\s*;`, 'm').test(dump.code));
  const prelude = enables.map((e) => `enable ${e.directive};\n`).join('');

  device.pushErrorScope('internal');
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ label: dump.file, code: prelude + dump.code });
  const info = await module.getCompilationInfo();
  for (const m of info.messages) {
    if (m.type === 'info') continue;
    const line = m.lineNum > 0 ? m.lineNum - enables.length : 0;
    report.push({ severity: m.type, line, col: m.linePos, text: m.message });
  }
  const moduleErrors = [await device.popErrorScope(), await device.popErrorScope()].filter(Boolean);
  if (moduleErrors.length > 0) {
    // The compilation messages say where; the scope's error only that the module is invalid.
    if (!report.some((r) => r.severity === 'error')) {
      for (const e of moduleErrors) report.push({ severity: 'error', line: 0, col: 0, text: e.message });
    }
    return report;
  }

  // A layout past the checking device's limits (the null backend's are WebGPU's defaults, e.g. 8
  // storage buffers a stage) cannot be created here: the module is compiled, the pipeline not.
  // Its constants are still matched against the module's overrides, as pipeline creation would.
  const storage = dump.bindings.filter((type) => type !== 'uniform').length;
  const uniforms = dump.bindings.length - storage;
  const over = [
    [storage, 'storage buffers', 'maxStorageBuffersPerShaderStage'],
    [uniforms, 'uniform buffers', 'maxUniformBuffersPerShaderStage'],
  ].filter(([n, , limit]) => n > device.limits[limit]);
  if (over.length > 0) {
    const overrides = new Set([...dump.code.matchAll(/\boverride\s+(\w+)/g)].map((m) => m[1]));
    for (const name of Object.keys(dump.constants).filter((n) => !overrides.has(n))) {
      report.push({ severity: 'error', line: 0, col: 0, text: `constant ${name} is not an override of the module` });
    }
    const why = over.map(([n, what, limit]) => `${n} ${what} > ${limit} ${device.limits[limit]}`).join(', ');
    report.push({ severity: 'module-only', line: 0, col: 0, text: `pipeline not created: its layout has ${why}` });
    return report;
  }

  device.pushErrorScope('internal');
  device.pushErrorScope('validation');
  const layout = device.createBindGroupLayout({
    label: dump.family,
    entries: dump.bindings.map((type, binding) => ({ binding, visibility: GPUShaderStage.COMPUTE, buffer: { type } })),
  });
  device.createComputePipeline({
    label: describe(dump),
    layout: device.createPipelineLayout({ bindGroupLayouts: [layout] }),
    compute: { module, entryPoint: dump.entry_point, constants: dump.constants },
  });
  for (const e of [await device.popErrorScope(), await device.popErrorScope()].filter(Boolean)) {
    report.push({ severity: 'error', line: 0, col: 0, text: `creating the pipeline: ${e.message.trim()}` });
  }
  for (const text of target.uncaptured.splice(0)) report.push({ severity: 'error', line: 0, col: 0, text });
  return report;
}

// Checks every dump: [{ dump, target (its name, or null where none can take it), report }], and
// the targets opened.
async function checkAll(dumps, verbose) {
  process.env.EGL_PLATFORM ??= 'surfaceless'; // Mesa's EGL without a display; read when Dawn opens EGL
  const { create, globals } = await import('webgpu');
  Object.assign(globalThis, globals);
  const wanted = [...new Set(dumps.flatMap((d) => d.needs.map((e) => e.feature)))];
  const opened = [];
  const results = [];
  for (const d of dumps) {
    let target = null;
    for (const [i, t] of TARGETS.entries()) {
      if (opened[i] === undefined) opened[i] = await openTarget(create, t, wanted);
      if (opened[i] && d.needs.every((e) => opened[i].features.has(e.feature))) {
        target = opened[i];
        break;
      }
    }
    if (verbose) console.log(`  ${target?.name ?? 'not checked'}: ${describe(d)}`);
    const report = target ? await checkOne(target, d) : null;
    if (target) target.checked++;
    results.push({ dump: d, target: target?.name ?? null, report });
  }
  return { results, opened: opened.filter(Boolean) };
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
  const { results, opened } = await checkAll(dumps, args.verbose);

  let errors = 0;
  let warnings = 0;
  const unchecked = [];
  const moduleOnly = [];
  for (const { dump, target, report } of results) {
    if (!target) {
      unchecked.push({ dump, why: `no adapter here offers ${dump.needs.map((e) => e.feature).join(', ')}` });
      continue;
    }
    for (const r of report) {
      if (r.severity === 'module-only') {
        moduleOnly.push({ dump, why: r.text, target });
        continue;
      }
      console.log(`${where(dump, shaders, r.line, r.col)}: ${r.severity}: ${r.text}\n    in ${describe(dump)}, on ${target}`);
      if (r.severity === 'error') errors++;
      else warnings++;
    }
  }
  for (const t of opened) {
    console.log(`${t.name} on ${t.description}, features [${[...t.features].join(', ')}]: ${t.checked} pipelines (${t.what})`);
  }
  const families = new Set(results.map((r) => r.dump.family));
  console.log(`${results.length - unchecked.length} of ${results.length} pipelines (${families.size} kernel families) ` +
    `compiled by Dawn/Tint in ${((Date.now() - started) / 1000).toFixed(1)} s: ${errors} errors, ${warnings} warnings, ` +
    `${unchecked.length} not checked`);
  for (const { dump, why } of unchecked) console.log(`  not checked (${why}): ${dump.file} ${describe(dump)}`);
  if (moduleOnly.length > 0) {
    console.log(`of which ${moduleOnly.length} shader modules compiled, their pipelines not created within the ` +
      `checking adapter's limits:`);
    for (const { dump, why, target } of moduleOnly) console.log(`  ${describe(dump)} on ${target}: ${why}`);
  }
  // Exits at once: nothing made on the devices is destroyed first.
  process.exit(errors > 0 || unchecked.length > 0 ? 1 : 0);
}

await main();
