// The check itself, on the WebGPU API alone, so that Node (Dawn's binding, the npm package
// `webgpu`) and a browser page (Chromium's own WebGPU, see page.html) run the same code: a
// device on an adapter's own limits, then for each dump a shader module (its compilation
// messages) and a compute pipeline with the dump's override constants and layout, under
// validation and internal error scopes. No Node or DOM API here.
//
// A dump, as this module takes it: { label, family, entry_point, constants, bindings, code },
// the fields of the JSON that WGNN_DUMP_WGSL writes (src/wgsl_dump.rs) with `code` its WGSL
// and `label` a name for messages (its file).

// WGSL's enable-extensions a pipeline needs, with the WebGPU feature behind each. naga (wgpu
// 30) refuses `enable subgroups;` (it parses it as not implemented) and turns the subgroup
// built-ins on with the device feature alone, so the engine's sources call them without the
// directive, which Tint requires: the check adds it where it is missing.
export const EXTENSIONS = [
  { directive: 'subgroups', feature: 'subgroups', uses: /\bsubgroup[A-Z]\w*\s*\(|@builtin\(\s*subgroup_/ },
  { directive: 'f16', feature: 'shader-f16', uses: /\bf16\b|\bvec[234]h\b|\bmat[234]x[234]h\b/ },
];

/** The extensions (entries of EXTENSIONS) that `code` uses. */
export function neededExtensions(code) {
  return EXTENSIONS.filter((e) => e.uses.test(code));
}

/** `family::entry [NAME=value ...]`, how a pipeline is named in messages. */
export function describe(dump) {
  const constants = Object.entries(dump.constants).map(([k, v]) => `${k}=${v}`).join(' ');
  return `${dump.family}::${dump.entry_point}${constants ? ` [${constants}]` : ''}`;
}

/** The buffer counts of a dump's layout, and the limit each must stay within. */
function layoutNeeds(dump) {
  const storage = dump.bindings.filter((type) => type !== 'uniform').length;
  return [
    [storage, 'storage buffers', 'maxStorageBuffersPerShaderStage'],
    [dump.bindings.length - storage, 'uniform buffers', 'maxUniformBuffersPerShaderStage'],
  ];
}

/**
 * Why a device with `features` (a Set of feature names) and `limits` cannot take `dump`, or
 * null where it can: a feature the dump's WGSL needs, or a layout past the limits.
 */
export function unfitFor(features, limits, dump) {
  const missing = neededExtensions(dump.code).filter((e) => !features.has(e.feature)).map((e) => e.feature);
  if (missing.length > 0) return `needs ${missing.join(', ')}`;
  const over = layoutNeeds(dump).filter(([n, , limit]) => n > limits[limit]);
  if (over.length > 0) return `binds ${over.map(([n, what, limit]) => `${n} ${what} > ${limit} ${limits[limit]}`).join(', ')}`;
  return null;
}

/**
 * A device on `adapter` with every limit the adapter offers and those of the `wanted` features
 * it has: { adapter, device, features, limits, description, uncaptured, lost }. Keep the
 * returned object (and whatever made the adapter) alive as long as the device is used.
 */
export async function openDevice(adapter, wanted) {
  const requiredLimits = {};
  for (const key in adapter.limits) {
    if (typeof adapter.limits[key] === 'number') requiredLimits[key] = adapter.limits[key];
  }
  const requiredFeatures = wanted.filter((f) => adapter.features.has(f));
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures });
  const state = {
    adapter,
    device,
    features: new Set(requiredFeatures),
    limits: requiredLimits,
    description: [adapter.info.vendor, adapter.info.architecture, adapter.info.description]
      .filter(Boolean).join(' ').trim() || 'no description',
    uncaptured: [],
    lost: null,
  };
  device.onuncapturederror = (e) => state.uncaptured.push(e.error.message);
  device.lost.then((info) => { state.lost = `device lost (${info.reason}): ${info.message}`; });
  return state;
}

/**
 * The messages of compiling `dump` and creating its pipeline on `state`'s device:
 * [{ severity: 'error' | 'warning', line, col, text }], line and col in the dump's own text
 * (0 where a message has no place).
 */
export async function checkOne(state, dump) {
  const { device } = state;
  const report = [];
  const enables = neededExtensions(dump.code)
    .filter((e) => !new RegExp(`^\\s*enable\\s+${e.directive}\\s*;`, 'm').test(dump.code));
  const prelude = enables.map((e) => `enable ${e.directive};\n`).join('');

  device.pushErrorScope('internal');
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ label: dump.label, code: prelude + dump.code });
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

  device.pushErrorScope('internal');
  device.pushErrorScope('validation');
  const layout = device.createBindGroupLayout({
    label: dump.family,
    entries: dump.bindings.map((type, binding) => ({ binding, visibility: GPUShaderStage.COMPUTE, buffer: { type } })),
  });
  // Where a backend compiles at pipeline creation (Dawn's Vulkan and GL backends do), this is
  // where the generated code meets the driver's compiler.
  device.createComputePipeline({
    label: describe(dump),
    layout: device.createPipelineLayout({ bindGroupLayouts: [layout] }),
    compute: { module, entryPoint: dump.entry_point, constants: dump.constants },
  });
  for (const e of [await device.popErrorScope(), await device.popErrorScope()].filter(Boolean)) {
    report.push({ severity: 'error', line: 0, col: 0, text: `creating the pipeline: ${e.message.trim()}` });
  }
  for (const text of state.uncaptured.splice(0)) report.push({ severity: 'error', line: 0, col: 0, text });
  if (state.lost) report.push({ severity: 'error', line: 0, col: 0, text: state.lost });
  return report;
}
