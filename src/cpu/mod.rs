//! The CPU reference path: plain Rust for every kernel, named and ordered like the shaders
//! (`shaders/<family>.wgsl` ↔ `src/kernels/<family>.rs` ↔ `src/cpu/<family>.rs`). Row-major
//! slices, shapes passed explicitly. Clarity over speed: these define what the kernels compute.

pub mod attention;
pub mod batch_norm;
pub mod bias_act;
pub mod conv2d;
pub mod dense_softmax_xent;
pub mod dropout;
pub mod embedding;
pub mod flash_attention;
pub mod gather;
pub mod grad_norm;
pub mod hinge;
pub mod layer_norm;
pub mod matmul;
pub mod mse;
pub mod optimizer;
pub mod pool2d;
pub mod positional;
pub mod reduce;
pub mod sigmoid_bce;
pub mod softmax_grad;
pub mod softmax_xent;
pub mod step_guard;
pub mod token_batch;
pub mod totals;

pub use attention::{attention_backward, attention_backward_masked, attention_forward, attention_forward_masked};
pub use attention::{attention_backward_dropout, attention_dropout_mask, attention_forward_dropout, AttentionDropout};
pub use batch_norm::{batch_norm_backward, batch_norm_forward_inference, batch_norm_forward_train};
pub use batch_norm::{
    batch_norm_backward_through_max_pool, batch_norm_commit_running, batch_norm_forward_train_deferred,
};
pub use bias_act::{bias_act_backward, bias_act_forward};
pub use conv2d::{conv2d_backward_activation, conv2d_backward_input, conv2d_backward_weights, conv2d_forward};
pub use dense_softmax_xent::dense_softmax_xent;
pub use dropout::{dropout_backward, dropout_forward};
pub use embedding::{embedding_backward, embedding_forward};
pub use flash_attention::{flash_attention_backward, flash_attention_forward};
pub use flash_attention::{flash_attention_backward_dropout, flash_attention_forward_dropout};
pub use flash_attention::{flash_attention_backward_masked, flash_attention_forward_masked};
pub use gather::{gather_counters, gather_rows};
pub use grad_norm::clip_factor;
pub use hinge::hinge;
pub use layer_norm::{layer_norm_backward, layer_norm_backward_dx_add, layer_norm_backward_params, layer_norm_forward};
pub use matmul::{matmul, matmul_column_sum, matmul_gathered_a};
pub use mse::mse;
pub use optimizer::{adadelta_update, adagrad_update, adamw_update, rmsprop_update, sgd_update_with_step};
pub use optimizer::{adam_update, sgd_update};
pub use pool2d::{avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward};
pub use pool2d::{global_avg_pool2d_backward, global_avg_pool2d_forward};
pub use pool2d::{max_pool2d_forward_normalized, ChannelNorm};
pub use positional::{positional_add_backward, positional_add_forward};
pub use reduce::column_sum;
pub use sigmoid_bce::{sigmoid, sigmoid_bce, sigmoid_bce_labels};
pub use softmax_grad::softmax_backward;
pub use softmax_xent::softmax_xent_dense;
pub use softmax_xent::{softmax, softmax_xent};
pub use step_guard::guard_step;
pub use token_batch::token_windows;
pub use totals::totals;
