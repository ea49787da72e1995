"""Config files of the real `inclusionAI/LLaDA2.0-Uni` repo, as recovered (see shared checkpoint facts).

The tiny builder starts from these and shrinks the sizes, so the tiny files carry exactly the real keys.
`BACKBONE`, `DECODER_TURBO` and `PREPROCESSOR` are complete copies; `VAE` completes a page that was cut off
at `use_post_quant_conv` with the stock FLUX.1 tail; `IMAGE_TOKENIZER` is derived from the loader code and
an exact parameter count.
"""

BACKBONE = {
    "architectures": ["LLaDA2MoeModelLM"],
    "auto_map": {
        "AutoConfig": "configuration_llada2uni_moe.LLaDA2MoeConfig",
        "AutoModel": "modeling_llada2uni_moe.LLaDA2MoeModelLM",
        "AutoModelForCausalLM": "modeling_llada2uni_moe.LLaDA2MoeModelLM",
    },
    "model_type": "llada2_moe",
    "torch_dtype": "bfloat16",
    "transformers_version": "4.51.0",
    "vocab_size": 173568,
    "hidden_size": 2048,
    "intermediate_size": 5120,
    "num_hidden_layers": 20,
    "num_attention_heads": 16,
    "num_key_value_heads": 4,
    "head_dim": 128,
    "hidden_act": "silu",
    "use_qkv_bias": False,
    "use_qk_norm": True,
    "use_bias": False,
    "rms_norm_eps": 1e-06,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "max_position_embeddings": 8192,
    "rope_theta": 600000,
    "rope_parameters": {"rope_type": "default", "rope_theta": 600000, "partial_rotary_factor": 0.5},
    "partial_rotary_factor": 0.5,
    "use_cache": False,
    "sliding_window": None,
    "pad_token_id": 156892,
    "num_experts": 256,
    "num_shared_experts": 1,
    "num_experts_per_tok": 8,
    "n_group": 8,
    "topk_group": 4,
    "routed_scaling_factor": 2.5,
    "moe_intermediate_size": 512,
    "first_k_dense_replace": 1,
    "output_router_logits": False,
    "image_token_offset": 157184,
}

DECODER_TURBO = {
    "_class_name": "ZImageTransformer2DModel",
    "_diffusers_version": "0.37.0.dev0",
    "all_f_patch_size": [1],
    "all_patch_size": [2],
    "axes_dims": [32, 48, 48],
    "axes_lens": [32768, 1024, 1024],
    "cap_feat_dim": 4096,
    "dim": 3840,
    "in_channels": 16,
    "n_heads": 30,
    "n_kv_heads": 30,
    "n_layers": 30,
    "n_refiner_layers": 2,
    "norm_eps": 1e-05,
    "qk_norm": True,
    "rope_theta": 256.0,
    "siglip_feat_dim": None,
    "t_scale": 1000.0,
}

VAE = {
    "_class_name": "AutoencoderKL",
    "_diffusers_version": "0.30.0.dev0",
    "_name_or_path": "../checkpoints/flux-dev",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "force_upcast": True,
    "in_channels": 3,
    "latent_channels": 16,
    "latents_mean": None,
    "latents_std": None,
    "layers_per_block": 2,
    "mid_block_add_attention": True,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 1024,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "use_post_quant_conv": False,
    "use_quant_conv": False,
}

PREPROCESSOR = {
    "min_pixels": 262144,
    "max_pixels": 4194304,
    "do_rescale": True,
    "do_normalize": True,
    "do_resize": False,
    "patch_size": 16,
    "temporal_patch_size": 1,
    "merge_size": 1,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "image_processor_type": "GlmImageImageProcessor",
    "processor_class": "GlmImageProcessor",
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
}

IMAGE_TOKENIZER = {
    "vision_config": {
        "hidden_size": 1536,
        "intermediate_size": 6144,
        "num_heads": 16,
        "depth": 40,
        "patch_size": 16,
        "image_size": 2048,
        "in_channels": 3,
        "hidden_act": "gelu",
        "attention_bias": True,
        "attention_dropout": 0.0,
        "layer_norm_eps": 1e-06,
        "spatial_merge_size": 1,
    },
    "vq_config": {"num_embeddings": 16384, "embed_dim": 2048, "latent_channels": 1536, "beta": 0.25},
}

# Ling-2 family file (eos = pad = <|endoftext|>); whether the Uni repo ships one is not known.
GENERATION = {
    "eos_token_id": 156892,
    "pad_token_id": 156892,
    "do_sample": False,
    "transformers_version": "4.51.0",
}

# The legacy flag the FP8 repo most likely carries (SGLang parses it as 128x128 block FP8, experts only).
FP8_FLAGS = {"use_fp8_experts": True}
