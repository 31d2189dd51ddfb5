// The training step counters, kept on the GPU so that no step needs an upload.
//   advance_counters: epoch_step[0] += 1 (the step within the epoch: the gather's batch position)
//                     global_step[0] += 1 (t, the number of updates so far: Adam's bias correction)
// One invocation; recorded once per training step, after the gather and before the update.

struct Params { unused: u32, _pad0: u32, _pad1: u32, _pad2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> epoch_step: array<u32>;
@group(0) @binding(2) var<storage, read_write> global_step: array<u32>;

@compute @workgroup_size(1)
fn advance_counters() {
    epoch_step[0] += 1u;
    global_step[0] += 1u;
}
