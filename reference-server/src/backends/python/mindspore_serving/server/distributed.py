"""`mindspore_serving.server.distributed`: model-parallel servables, which
the reference server does not serve; declaring one fails the servable's load
with a clear error."""


def declare_servable(rank_size, stage_size, with_batch_dim=True, without_batch_dim_inputs=None,
                     enable_pipeline_infer=False):
    raise RuntimeError(
        "distributed (model-parallel) servables are not served by the reference server: "
        f"declare_servable(rank_size={rank_size}, stage_size={stage_size}) needs MindSpore's "
        "distributed workers; export the model as one ONNX file and use register.declare_model")


def start_servable(*args, **kwargs):
    declare_servable(kwargs.get("rank_size", "?"), kwargs.get("stage_size", "?"))


def startup_agents(*args, **kwargs):
    declare_servable(kwargs.get("rank_size", "?"), kwargs.get("stage_size", "?"))
