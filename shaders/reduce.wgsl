// Column sums, the reduction behind every bias gradient.
//   column_sum: out[k, c] (+)= sum of x[r, c] for r in chunk k      x: [rows, cols], out: [chunks, cols]
// Each invocation sums at most `chunk` rows of one column: lavapipe silently stops a shader
// invocation's loops after 65,535 iterations, so a long column (60,000 rows) is summed in chunks
// and the [chunks, cols] partials summed again by a second dispatch of this kernel. Fixed order:
// the result is the same bits on every run.

override WG: u32 = 64u;

struct Params {
    rows: u32,
    cols: u32,
    chunk: u32,       // rows per invocation
    accumulate: u32,  // 1: out += sum, 0: out = sum
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn column_sum(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let k = gid.y;
    if (c >= p.cols) { return; }
    let r_begin = k * p.chunk;
    let r_end = min(r_begin + p.chunk, p.rows);
    var s = 0.0;
    for (var r = r_begin; r < r_end; r++) {
        s += x[r * p.cols + c];
    }
    let o = k * p.cols + c;
    if (p.accumulate != 0u) { s += out[o]; }
    out[o] = s;
}
