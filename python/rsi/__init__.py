"""rsi — read the runs of rsi (recursive self-improvement experiments) from Python.

    import rsi
    models = rsi.load_run("runs/quickstart")          # pandas: one row per model
    generations = rsi.load_generations("runs/quickstart")
    weights = rsi.load_weights("runs/quickstart", 17)  # name -> numpy array
    net = rsi.to_torch("runs/quickstart", 17)          # torch.nn.Module, eval mode (needs PyTorch)

The file layout is checkpoints/FORMAT.md of the rsi repository."""
from .data import fashion_mnist_test
from .genome import Tensor, flatten as flatten_genome, parse as parse_genome, parse_table, tensor_table
from .run import generation_files, load_generations, load_run, load_weights, model_record


def to_torch(run_dir, model):
    """Model `model` of a run as a torch.nn.Module (see rsi.torch_model.to_torch); imports PyTorch."""
    from .torch_model import to_torch as build
    return build(run_dir, model)


__all__ = ["Tensor", "fashion_mnist_test", "flatten_genome", "generation_files", "load_generations", "load_run", "load_weights",
           "model_record", "parse_genome", "parse_table", "tensor_table", "to_torch"]
