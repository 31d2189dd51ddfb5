//! CPU reference of shaders/bias_act.wgsl.

use crate::activation::Activation;

/// Y = act(X + b).  x: [rows, cols], bias: `[cols]` → y: [rows, cols].
pub fn bias_act_forward(x: &[f32], bias: Option<&[f32]>, rows: usize, cols: usize, act: Activation) -> Vec<f32> {
    assert_eq!(x.len(), rows * cols, "bias_act_forward: x must be rows × cols");
    assert!(act.is_elementwise(), "bias_act_forward: softmax is row-wise (cpu::softmax)");
    x.iter().enumerate().map(|(i, &v)| act.forward(v + bias.map_or(0.0, |b| b[i % cols]))).collect()
}

/// dZ = dY ⊙ act′(Y), db = column sums of dZ.  dy, y: [rows, cols] → (dz [rows, cols], db `[cols]`).
/// y is what the forward saved: its output, or its input for the GELUs
/// ([`Activation::saves_input`]).
pub fn bias_act_backward(dy: &[f32], y: &[f32], rows: usize, cols: usize, act: Activation) -> (Vec<f32>, Vec<f32>) {
    assert_eq!(dy.len(), rows * cols, "bias_act_backward: dy must be rows × cols");
    assert_eq!(y.len(), rows * cols, "bias_act_backward: y must be rows × cols");
    assert!(act.is_elementwise(), "bias_act_backward: softmax is row-wise (cpu::softmax_backward)");
    let dz: Vec<f32> = dy.iter().zip(y).map(|(&g, &o)| g * act.derivative_from_saved(o)).collect();
    let db = super::reduce::column_sum(&dz, rows, cols);
    (dz, db)
}
