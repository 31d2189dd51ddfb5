// Totals of a pair of per-row vectors: the loss and accuracy sums of a batch, shared by every loss.
//   totals: out[g, 0] (+)= Σ a[off_a + r·stride],  out[g, 1] (+)= Σ b[off_b + r·stride]
//           for r in block g = [g·block, min((g+1)·block, rows))          out: [groups, 2]
// One workgroup per block: each invocation sums a strided slice of the block (block / WG rows,
// kept far below lavapipe's 65,535-iteration loop cap), then a tree in workgroup memory. A
// second dispatch of this kernel sums the [groups, 2] partials (stride 2). Fixed order: the same
// bits on every run.

const WG: u32 = 256u;

struct Params {
    rows: u32,
    block: u32,       // rows per workgroup
    stride: u32,      // elements between consecutive rows of a and b
    off_a: u32,
    off_b: u32,
    accumulate: u32,  // 1: out += total, 0: out = total
    _pad0: u32,
    _pad1: u32,
}

// All read_write: wgpu tracks usage per buffer, so views of one buffer bound read-only and
// writable in the same dispatch would conflict.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> a: array<f32>;
@group(0) @binding(2) var<storage, read_write> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

var<workgroup> part_a: array<f32, WG>;
var<workgroup> part_b: array<f32, WG>;

@compute @workgroup_size(WG)
fn totals(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let begin = wid.x * p.block;
    let end = min(begin + p.block, p.rows);
    var sa = 0.0;
    var sb = 0.0;
    for (var r = begin + lid.x; r < end; r += WG) {
        sa += a[p.off_a + r * p.stride];
        sb += b[p.off_b + r * p.stride];
    }
    part_a[lid.x] = sa;
    part_b[lid.x] = sb;
    workgroupBarrier();
    for (var width = WG / 2u; width > 0u; width /= 2u) {
        if (lid.x < width) {
            part_a[lid.x] += part_a[lid.x + width];
            part_b[lid.x] += part_b[lid.x + width];
        }
        workgroupBarrier();
    }
    if (lid.x == 0u) {
        var ta = part_a[0];
        var tb = part_b[0];
        if (p.accumulate != 0u) {
            ta += out[wid.x * 2u];
            tb += out[wid.x * 2u + 1u];
        }
        out[wid.x * 2u] = ta;
        out[wid.x * 2u + 1u] = tb;
    }
}
