//! Wanda and SparseGPT on your own tensors, with `spindle-prune` alone: no model, no file, no
//! dataset. `cargo run -p spindle-prune --example wanda_on_tensors`
use spindle_prune::{ColumnNorms, Hessian, Pattern, SparseGptConfig, apply_mask, sparsegpt, sparsity, wanda};
use tch::{Device, Kind, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tch::manual_seed(0);
    let w = Tensor::randn([64, 128], (Kind::Float, Device::Cpu)); // a linear layer, [out, in]
    let x = Tensor::randn([4, 32, 128], (Kind::Float, Device::Cpu)); // its inputs: 4 sequences of 32 tokens

    // Wanda: |W| · ‖x‖ per input column, the smallest half of each row removed.
    let mut norms = ColumnNorms::new(128, Device::Cpu);
    norms.add_batch(&x)?;
    let mask = wanda::mask(&w, norms.get()?, Pattern::Unstructured { sparsity: 0.5 })?;
    let pruned = apply_mask(&w, &mask);
    println!("wanda 50%: sparsity {:.3}", sparsity(&pruned));

    // SparseGPT 2:4 from the inputs' Hessian, the kept weights updated to compensate.
    let mut h = Hessian::new(128, Device::Cpu);
    h.add_batch(&x)?;
    let out = sparsegpt::prune_shared(&[&w], h.get()?, Pattern::NM { n: 2, m: 4 }, SparseGptConfig::default())?;
    let y = x.matmul(&w.tr());
    let err = (x.matmul(&out[0].weight.tr()) - &y).pow_tensor_scalar(2).sum(Kind::Float) / y.pow_tensor_scalar(2).sum(Kind::Float);
    println!("sparsegpt 2:4: sparsity {:.3}, relative output error {:.4}", sparsity(&out[0].weight), err.double_value(&[]));
    Ok(())
}
