"""LLaMA-Factory's training keys that `TrainConfig` does not model: each one accepted as a no-op or refused.

For: `LF_KEYS`, one typed table over every remaining key of LLaMA-Factory's ModelArguments, DataArguments,
FinetuningArguments, GeneratingArguments and TrainingArguments (with the Hugging Face Seq2SeqTrainingArguments
under them), read from LLaMA-Factory's `src/llamafactory/hparams/`. A `noop` key is accepted and named on one
start-up line with its reason; a `refuse` key is accepted only at its "off" value(s) and otherwise refused with
its reason before anything loads. Keys that do something here are fields of `TrainConfig` (config.py); so are
use_muon, use_llama_pro, use_asft_loss/asft_alpha and use_eaft_loss/eaft_alpha (lf_extras.py checks them).

Not for: checking values of honoured keys (config.py) or the export/chat YAMLs (infer_config.py).
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple


class KeyRule(NamedTuple):
    action: Literal["noop", "refuse"]
    reason: str
    off: tuple[Any, ...] = (None, False)  # refuse: values that mean "not used" and are accepted silently


def _noop(reason: str) -> KeyRule:
    return KeyRule("noop", reason)


def _refuse(reason: str, *off: Any) -> KeyRule:
    """Refused unless at one of `off` (default None/False); `_refuse(reason, ())` refuses every value."""
    if off == ((),):
        return KeyRule("refuse", reason, ())
    return KeyRule("refuse", reason, off or (None, False))


ONE_PROCESS = "one process trains here; there is no distributed setup to configure"
IN_PROCESS = "datasets are read and tokenized in this process, once"
NO_CACHE = "athanor keeps no dataset cache"
LOGS = "athanor writes trainer_log.jsonl and loss.png; no external tracker"
HUB = "no hub access: models and datasets are local files or store names"
PREDICT_GENERATION = "do_predict takes max_new_tokens, num_beams, ... (LF's generating keys), which win over it"
MULTIMODAL = "a multimodal processor setting; athanor trains text models"
INFERENCE = "an inference-backend setting: athanor chat/serve run on athanor's engine"
EXPORT = "an export setting: use it in the `athanor export` YAML"
CUDA_KERNELS = "needs CUDA kernels, which this build does not have"
NOT_HERE = "not implemented in athanor"
MEGATRON = "a Megatron-Core setting; athanor has no Megatron (multi-GPU CUDA training)"


LF_KEYS: dict[str, KeyRule] = {
    # ---- ModelArguments (hparams/model_args.py)
    "adapter_folder": _refuse("loading adapters from a folder of folders is " + NOT_HERE),
    "cache_dir": _noop(HUB),
    "use_fast_tokenizer": _noop("athanor always uses the fast (tokenizers) tokenizer"),
    "resize_vocab": _refuse("resizing the vocabulary is " + NOT_HERE),
    "split_special_tokens": _refuse("special tokens are never split here", False),
    "add_tokens": _refuse("adding tokens is " + NOT_HERE),
    "add_special_tokens": _refuse("adding special tokens is " + NOT_HERE),
    "new_special_tokens_config": _refuse("adding special tokens is " + NOT_HERE),
    "init_special_tokens": _noop("no new tokens are added, so there is nothing to initialise"),
    "model_revision": _refuse(HUB, None, "main"),
    "low_cpu_mem_usage": _noop("weights are loaded the one way athanor loads them"),
    "rope_scaling": _refuse("RoPE scaling for training is " + NOT_HERE),
    "flash_attn": _refuse("FlashAttention " + CUDA_KERNELS + "; use auto, sdpa or disabled",
                          None, "auto", "sdpa", "disabled", "eager"),
    "shift_attn": _refuse("shift short attention (LongLoRA) is " + NOT_HERE),
    "mixture_of_depths": _refuse("LLaMA-Factory runs it on the MoD package (pip: mixture-of-depth), whose last "
                                 "release (1.2.0) does not import with transformers 5 (it needs "
                                 "TRANSFORMERS_CACHE, removed there) and wraps decoder layers with the "
                                 "transformers 4 layer API"),
    "use_unsloth": _refuse("unsloth " + CUDA_KERNELS),
    "use_unsloth_gc": _refuse("unsloth " + CUDA_KERNELS),
    "enable_liger_kernel": _refuse("liger kernels " + CUDA_KERNELS),
    "moe_aux_loss_coef": _refuse("MoE router loss is " + NOT_HERE),
    "disable_gradient_checkpointing": _noop("gradient checkpointing is off here unless gradient_checkpointing: "
                                            "true (LLaMA-Factory turns it on by default)"),
    "use_reentrant_gc": _noop("gradient checkpointing here uses transformers' default"),
    "upcast_layernorm": _noop("weights train in float32 here, so layer norms already are"),
    "upcast_lmhead_output": _noop("logits are float32 here already"),
    "train_from_scratch": _refuse("training from random weights is " + NOT_HERE),
    "infer_backend": _noop(INFERENCE),
    "offload_folder": _noop("no weight offloading here"),
    "use_kv_cache": _noop("training runs without a KV cache"),
    "use_v1_kernels": _refuse("LLaMA-Factory's v1 kernels " + CUDA_KERNELS),
    "infer_dtype": _noop(INFERENCE),
    "hf_hub_token": _noop(HUB),
    "ms_hub_token": _noop(HUB),
    "om_hub_token": _noop(HUB),
    "print_param_status": _noop("athanor prints the trainable parameter count"),
    "trust_remote_code": _noop("athanor runs no code from model folders; it has its own architectures"),
    "quantization_method": _refuse("only bitsandbytes quantization (quantization_bit) is supported", None, "bnb",
                                   "bitsandbytes"),
    "quantization_type": _refuse("athanor's QLoRA loads in nf4", None, "nf4"),
    "double_quantization": _refuse("athanor's QLoRA always uses double quantization", None, True),
    "quantization_device_map": _noop(ONE_PROCESS),
    "image_max_pixels": _noop(MULTIMODAL), "image_min_pixels": _noop(MULTIMODAL),
    "image_do_pan_and_scan": _noop(MULTIMODAL), "crop_to_patches": _noop(MULTIMODAL),
    "video_max_pixels": _noop(MULTIMODAL), "video_min_pixels": _noop(MULTIMODAL), "video_fps": _noop(MULTIMODAL),
    "video_maxlen": _noop(MULTIMODAL), "use_audio_in_video": _noop(MULTIMODAL),
    "audio_sampling_rate": _noop(MULTIMODAL),
    "export_dir": _noop(EXPORT), "export_size": _noop(EXPORT), "export_device": _noop(EXPORT),
    "export_quantization_bit": _noop(EXPORT), "export_quantization_dataset": _noop(EXPORT),
    "export_quantization_nsamples": _noop(EXPORT), "export_quantization_maxlen": _noop(EXPORT),
    "export_legacy_format": _noop(EXPORT), "export_hub_model_id": _noop(EXPORT),
    "vllm_maxlen": _noop(INFERENCE), "vllm_gpu_util": _noop(INFERENCE), "vllm_enforce_eager": _noop(INFERENCE),
    "vllm_max_lora_rank": _noop(INFERENCE), "vllm_config": _noop(INFERENCE),
    "sglang_maxlen": _noop(INFERENCE), "sglang_mem_fraction": _noop(INFERENCE), "sglang_tp_size": _noop(INFERENCE),
    "sglang_config": _noop(INFERENCE), "sglang_lora_backend": _noop(INFERENCE),
    "use_kt": _refuse("ktransformers " + CUDA_KERNELS),
    "kt_cpu_activation": _refuse("ktransformers " + CUDA_KERNELS),
    "kt_weight_path": _refuse("ktransformers " + CUDA_KERNELS),
    "kt_non_expert_weight_path": _refuse("ktransformers " + CUDA_KERNELS),
    "kt_expert_checkpoint_path": _refuse("ktransformers " + CUDA_KERNELS),
    "kt_use_lora_experts": _refuse("ktransformers " + CUDA_KERNELS),
    "kt_lora_expert_num": _refuse("ktransformers " + CUDA_KERNELS),
    "kt_lora_expert_intermediate_size": _refuse("ktransformers " + CUDA_KERNELS),
    "kt_config": _refuse("ktransformers " + CUDA_KERNELS),
    "compute_dtype": _noop("set by bf16/fp16"),
    "device_map": _noop(ONE_PROCESS),
    "model_max_length": _noop("cutoff_len bounds every sample"),
    "block_diag_attn": _noop("packed rows here always attend within each sample only"),
    # ---- DataArguments (hparams/data_args.py)
    "media_dir": _noop(MULTIMODAL),
    "mix_strategy": _refuse("datasets are concatenated; interleaving is " + NOT_HERE, None, "concat"),
    "interleave_probs": _refuse("datasets are concatenated; interleaving is " + NOT_HERE),
    "overwrite_cache": _noop(NO_CACHE),
    "preprocessing_batch_size": _noop(IN_PROCESS),
    "preprocessing_num_workers": _noop(IN_PROCESS),
    "eval_num_beams": _refuse("do_predict's beam width is num_beams here", None, 1),
    "ignore_pad_token_for_loss": _noop("padding never counts in the loss here"),
    "eval_on_each_dataset": _refuse("eval datasets are evaluated together here"),
    "neat_packing": _noop("packing here never lets samples attend to each other, which neat_packing asks for"),
    "tool_format": _refuse("tools render through the model's own chat template here"),
    "preserve_thinking": _refuse("reasoning in earlier turns is kept only as the template renders it"),
    "data_shared_file_system": _noop(ONE_PROCESS),
    # ---- FinetuningArguments (hparams/finetuning_args.py)
    "freeze_trainable_modules": _refuse("freeze tuning trains whole decoder layers here", None, "all"),
    "freeze_extra_modules": _refuse("freeze tuning trains whole decoder layers here"),
    "loraplus_lr_embedding": _noop("applies only with loraplus_lr_ratio"),
    "pissa_iter": _noop("applies only with pissa_init"),
    "pref_ftx": _refuse("an SFT term in the preference loss is " + NOT_HERE, None, 0, 0.0),
    "pref_bco_weight": _refuse("BCO is " + NOT_HERE, None, 0, 0.0),
    "dpo_label_smoothing": _refuse("label smoothing in DPO is " + NOT_HERE, None, 0, 0.0),
    "simpo_gamma": _refuse("athanor's SimPO uses a fixed gamma of 0.5", None, 0.5),
    "ppo_buffer_size": _noop("stage: ppo is refused"), "ppo_epochs": _noop("stage: ppo is refused"),
    "ppo_score_norm": _noop("stage: ppo is refused"), "ppo_target": _noop("stage: ppo is refused"),
    "ppo_whiten_rewards": _noop("stage: ppo is refused"),
    "ref_model": _refuse("the DPO reference is the base model itself here"),
    "ref_model_adapters": _refuse("the DPO reference is the base model itself here"),
    "ref_model_quantization_bit": _refuse("the DPO reference is the base model itself here"),
    "reward_model": _refuse("stage: ppo is " + NOT_HERE),
    "reward_model_adapters": _refuse("stage: ppo is " + NOT_HERE),
    "reward_model_quantization_bit": _refuse("stage: ppo is " + NOT_HERE),
    "reward_model_type": _noop("stage: ppo is refused"),
    "ld_alpha": _refuse("LD-DPO is " + NOT_HERE),
    "use_swanlab": _refuse(LOGS), "swanlab_project": _noop(LOGS), "swanlab_workspace": _noop(LOGS),
    "swanlab_run_name": _noop(LOGS), "swanlab_mode": _noop(LOGS), "swanlab_api_key": _noop(LOGS),
    "swanlab_logdir": _noop(LOGS), "swanlab_lark_webhook_url": _noop(LOGS), "swanlab_lark_secret": _noop(LOGS),
    "use_mca": _refuse("Megatron-Core " + CUDA_KERNELS),
    "use_megatron_bridge": _refuse("Megatron " + CUDA_KERNELS),
    "megatron_bridge_args": _refuse("Megatron " + CUDA_KERNELS),
    "use_hyper_parallel": _refuse(ONE_PROCESS),
    "hyper_parallel_args": _refuse(ONE_PROCESS),
    "hyper_parallel_cp_size": _refuse(ONE_PROCESS, None, 1),
    "freeze_vision_tower": _noop(MULTIMODAL), "freeze_multi_modal_projector": _noop(MULTIMODAL),
    "freeze_language_model": _refuse(MULTIMODAL),
    "compute_accuracy": _refuse("token accuracy in eval is " + NOT_HERE),
    "disable_shuffling": _refuse("training data is always shuffled here"),
    "early_stopping_steps": _refuse("early stopping is " + NOT_HERE),
    "plot_loss": _noop("athanor always writes loss.png"),
    "include_effective_tokens_per_second": _noop("trainer_log.jsonl always has tokens_per_s"),
    # ---- GeneratingArguments (hparams/generating_args.py): do_sample, temperature, ... are TrainConfig fields
    # ---- TrainingArguments (hparams/training_args.py: ray, profiler, fp8, overwrite_output_dir)
    "ray_num_workers": _noop(ONE_PROCESS + "; Ray is not used"),
    "ray_init_kwargs": _noop(ONE_PROCESS), "master_addr": _noop(ONE_PROCESS), "master_port": _noop(ONE_PROCESS),
    "ray_run_name": _noop(ONE_PROCESS), "ray_storage_path": _noop(ONE_PROCESS),
    "ray_storage_filesystem": _noop(ONE_PROCESS), "resources_per_worker": _noop(ONE_PROCESS),
    "placement_strategy": _noop(ONE_PROCESS),
    "enable_torch_profiler": _refuse("the torch profiler is " + NOT_HERE),
    "profiler_output_dir": _noop("applies only with enable_torch_profiler"),
    "profiler_wait_steps": _noop("applies only with enable_torch_profiler"),
    "profiler_warmup_steps": _noop("applies only with enable_torch_profiler"),
    "profiler_active_steps": _noop("applies only with enable_torch_profiler"),
    "profiler_repeat": _noop("applies only with enable_torch_profiler"),
    "profiler_record_shapes": _noop("applies only with enable_torch_profiler"),
    "profiler_profile_memory": _noop("applies only with enable_torch_profiler"),
    "profiler_with_stack": _noop("applies only with enable_torch_profiler"),
    "profile_modules": _noop("applies only with enable_torch_profiler"),
    "fp8": _refuse("FP8 training " + CUDA_KERNELS),
    "fp8_backend": _noop("applies only with fp8"), "fp8_enable_fsdp_float8_all_gather": _noop("applies only with fp8"),
    "overwrite_output_dir": _noop("athanor writes into output_dir whether or not it exists"),
    # ---- Hugging Face Seq2SeqTrainingArguments (transformers)
    "lr_scheduler_kwargs": _refuse("extra scheduler arguments are " + NOT_HERE, None, {}),
    "optim_args": _refuse("extra optimizer arguments are " + NOT_HERE),
    "optim_target_modules": _noop("transformers' own GaLore/APOLLO optim names are not offered; LF's use_galore/"
                                  "galore_target and use_apollo/apollo_target are"),
    "average_tokens_across_devices": _noop(ONE_PROCESS),
    "label_smoothing_factor": _refuse("label smoothing is " + NOT_HERE, None, 0, 0.0),
    "bf16_full_eval": _noop("eval runs in the training precision"),
    "fp16_full_eval": _noop("eval runs in the training precision"),
    "tf32": _noop("no CUDA matmul settings on this machine"),
    "activation_checkpointing": _refuse("use gradient_checkpointing"),
    "activation_checkpointing_kwargs": _noop("use gradient_checkpointing"),
    "gradient_checkpointing_kwargs": _noop("gradient checkpointing here uses transformers' default"),
    "torch_compile": _refuse("torch.compile for training is " + NOT_HERE),
    "torch_compile_backend": _noop("applies only with torch_compile"),
    "torch_compile_mode": _noop("applies only with torch_compile"),
    "use_liger_kernel": _refuse("liger kernels " + CUDA_KERNELS),
    "liger_kernel_config": _noop("applies only with liger kernels"),
    "use_cache": _noop("training runs without a KV cache"),
    "neftune_noise_alpha": _refuse("NEFTune noise is " + NOT_HERE),
    "torch_empty_cache_steps": _noop("no CUDA cache on this machine"),
    "auto_find_batch_size": _refuse("the batch size is per_device_train_batch_size, not searched"),
    "logging_strategy": _refuse("logging is every logging_steps", None, "steps"),
    "logging_first_step": _noop(LOGS), "log_on_each_node": _noop(ONE_PROCESS),
    "logging_nan_inf_filter": _noop(LOGS), "include_num_input_tokens_seen": _noop("always on here"),
    "log_level": _noop(LOGS), "log_level_replica": _noop(ONE_PROCESS), "disable_tqdm": _noop(LOGS),
    "logging_dir": _noop(LOGS), "report_to": _noop(LOGS), "run_name": _noop(LOGS), "project": _noop(LOGS),
    "trackio_space_id": _noop(LOGS), "trackio_bucket_id": _noop(LOGS), "trackio_static_space_id": _noop(LOGS),
    "eval_delay": _refuse("eval runs every eval_steps from the start", None, 0),
    "prediction_loss_only": _noop("eval reports eval_loss"), "eval_on_start": _refuse("eval runs every eval_steps"),
    "eval_do_concat_batches": _noop("eval reports eval_loss"), "eval_use_gather_object": _noop(ONE_PROCESS),
    "eval_accumulation_steps": _noop("eval reports eval_loss"), "include_for_metrics": _noop("eval reports eval_loss"),
    "batch_eval_metrics": _noop("eval reports eval_loss"),
    "save_on_each_node": _noop(ONE_PROCESS), "enable_jit_checkpoint": _noop("checkpoints every save_steps"),
    "save_safetensors": _noop("athanor always writes safetensors"),
    "push_to_hub": _refuse(HUB), "hub_token": _noop(HUB), "hub_private_repo": _noop(HUB), "hub_model_id": _noop(HUB),
    "hub_strategy": _noop(HUB), "hub_always_push": _noop(HUB), "hub_revision": _noop(HUB),
    "load_best_model_at_end": _refuse("the last step's weights are saved; picking the best is " + NOT_HERE),
    "metric_for_best_model": _noop("applies only with load_best_model_at_end"),
    "greater_is_better": _noop("applies only with load_best_model_at_end"),
    "ignore_data_skip": _noop("resuming skips the data already seen"),
    "restore_callback_states_from_checkpoint": _noop("resuming restores the trainer state"),
    "full_determinism": _refuse("full determinism is " + NOT_HERE + "; seed fixes data order and new weights"),
    "data_seed": _noop("seed orders the data"),
    "use_cpu": _noop("the device is chosen for you: CUDA when present, else the CPU"),
    "no_cuda": _noop("the device is chosen for you: CUDA when present, else the CPU"),
    "accelerator_config": _noop(ONE_PROCESS), "parallelism_config": _noop(ONE_PROCESS),
    "dataloader_drop_last": _refuse("the last short batch is kept"),
    "dataloader_num_workers": _noop(IN_PROCESS), "dataloader_pin_memory": _noop(IN_PROCESS),
    "dataloader_persistent_workers": _noop(IN_PROCESS), "dataloader_prefetch_factor": _noop(IN_PROCESS),
    "dataloader_multiprocessing_context": _noop(IN_PROCESS), "dataloader_in_order": _noop(IN_PROCESS),
    "remove_unused_columns": _noop("rows are built by athanor; there are no extra columns"),
    "label_names": _noop("rows are built by athanor"),
    "train_sampling_strategy": _refuse("training data is shuffled", None, "random"),
    "length_column_name": _noop("rows are built by athanor"),
    "group_by_length": _refuse("grouping by length is " + NOT_HERE),
    "ddp_find_unused_parameters": _noop(ONE_PROCESS), "ddp_bucket_cap_mb": _noop(ONE_PROCESS),
    "ddp_broadcast_buffers": _noop(ONE_PROCESS), "ddp_static_graph": _noop(ONE_PROCESS),
    "ddp_backend": _noop(ONE_PROCESS), "ddp_timeout": _noop(ONE_PROCESS), "local_rank": _noop(ONE_PROCESS),
    "fsdp": _noop(ONE_PROCESS + "; FSDP needs torch.distributed, so this run trains without it"),
    "fsdp_config": _noop(ONE_PROCESS), "fsdp_transformer_layer_cls_to_wrap": _noop(ONE_PROCESS),
    "deepspeed": _noop(ONE_PROCESS + "; DeepSpeed needs CUDA/torch.distributed, so this run trains without it"),
    "debug": _noop(LOGS), "skip_memory_metrics": _noop(LOGS),
    "sortish_sampler": _refuse("training data is shuffled"),
    "generation_max_length": _noop(PREDICT_GENERATION), "generation_num_beams": _noop(PREDICT_GENERATION),
    "generation_config": _noop(PREDICT_GENERATION),
    # ---- Megatron-Core / mcore_adapter keys (LF's use_mca and megatron_bridge examples)
    **{key: _refuse(MEGATRON, ()) for key in (
        "tensor_model_parallel_size", "pipeline_model_parallel_size", "expert_model_parallel_size",
        "context_parallel_size", "sequence_parallel", "use_distributed_optimizer", "overlap_param_gather",
        "overlap_grad_reduce", "bias_activation_fusion", "apply_rope_fusion", "moe_grouped_gemm",
        "moe_token_dispatcher_type", "recompute_granularity", "mixed_precision", "use_packed_sequences",
        "export_hf_on_finish", "virtual_pipeline_model_parallel_size")},
}


def start_up_notes(keys: dict[str, Any]) -> list[str]:
    """One line per reason, naming the no-op keys of a config that were accepted and ignored."""
    by_reason: dict[str, list[str]] = {}
    for key, value in keys.items():
        rule = LF_KEYS[key]
        if rule.action == "noop" or value in rule.off:
            by_reason.setdefault(rule.reason if rule.action == "noop" else "left at its default", []).append(key)
    return [f"ignored {', '.join(names)}: {reason}" for reason, names in by_reason.items()]


def refusals(keys: dict[str, Any]) -> list[str]:
    """One problem line per refused key of a config (a refuse key at an "off" value is fine)."""
    out = []
    for key, value in keys.items():
        rule = LF_KEYS[key]
        if rule.action == "refuse" and not _is_off(value, rule.off):
            out.append(f"{key}: {rule.reason} (got {value!r})")
    return out


def _is_off(value: Any, off: tuple[Any, ...]) -> bool:
    try:
        return value in off
    except TypeError:  # an unhashable dict/list compares fine with ==; this is for odd types
        return False
