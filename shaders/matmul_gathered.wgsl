// The subgroup matmul with op(A) gathered from the resident data set (gather.wgsl's u8 layout),
// so a training step's first layer reads its batch where it lies instead of from a gathered copy:
//   stored A's row r = norm(src[idx[start + min(r, rows − 1)], :]),  norm(v) = v·scale + shift
//     src: [total_rows, D] u8 packed 4 per u32, D % 4 == 0 (one binding); idx: [n] u32.
//   forward (A = [rows, D]):       C = epilogue(A · W)
//   weight gradient (TRANS_A, A stored [K ≥ rows, D]): dW = Aᵀ · dZ, rows past `rows` repeat the
//     last one (finite), where dZ's are zero.
// Appended to activation.wgsl + matmul.wgsl + matmul_subgroup.wgsl as their A source (see there).
// The batch start is `epoch_step[PARITY] * stride` when START_FROM_COUNTER, else `start`, as in
// gather.wgsl. With WRITE_LABELS (forward only: M = rows), the dispatch also does what the
// gather it replaces did besides the features: y[r] = labels[idx[start + r]], and (counter
// start) the step counters, epoch_step[1 − PARITY] = epoch_step[PARITY] + 1 and with ADVANCE_T
// t_counter[0] += 1, by one invocation; nothing in the dispatch reads the cells it writes.

override START_FROM_COUNTER: bool = true;
override PARITY: u32 = 0u;
override WRITE_LABELS: bool = false;
override ADVANCE_T: bool = false;

@group(0) @binding(1) var<storage, read> src_words: array<u32>;
@group(0) @binding(6) var<storage, read> idx: array<u32>;
@group(0) @binding(7) var<storage, read> labels: array<u32>;
@group(0) @binding(8) var<storage, read_write> epoch_step: array<u32>;  // [2]: position cells
@group(0) @binding(9) var<storage, read_write> y: array<u32>;
@group(0) @binding(10) var<storage, read_write> t_counter: array<u32>;  // ADVANCE_T: [1]

fn a_batch_start() -> u32 {
    if (START_FROM_COUNTER) { return epoch_step[PARITY] * p.stride; }
    return p.start;
}

// A row of D u8 features is D / 4 words, as a row of D f32s is D / 4 vec4s: len4 counts both.
fn a_row_base(r: u32, len4: u32, start: u32) -> u32 {
    return idx[start + min(r, p.rows - 1u)] * len4;
}

// 4 features from one packed word: what a vec4 load of a gathered row would have given.
fn a_at(base: u32, q: u32) -> vec4<f32> {
    return a_vec(base + q);
}

fn a_vec(i: u32) -> vec4<f32> {
    let word = src_words[i];
    let bytes = vec4<u32>(word, word >> 8u, word >> 16u, word >> 24u) & vec4<u32>(0xFFu);
    return vec4<f32>(bytes) * p.scale + p.shift;
}

// The labels of this workgroup's tile rows (the first column of workgroups and split), and the
// counters by the very first invocation.
fn a_duties(wid: vec3<u32>, lane: u32, m0: u32, tile_rows: u32, start: u32) {
    if (!WRITE_LABELS || wid.x != 0u || wid.z != 0u) { return; }
    let end = min(m0 + tile_rows, p.m);
    for (var r = m0 + lane; r < end; r += 8u) {
        y[r] = labels[idx[start + r]];
    }
    if (START_FROM_COUNTER && m0 == 0u && lane == 0u) {
        epoch_step[1u - PARITY] = epoch_step[PARITY] + 1u;
        if (ADVANCE_T) { t_counter[0] += 1u; }
    }
}
