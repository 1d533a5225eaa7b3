"""tqdm.auto's bar, without its warning in a Jupyter kernel that lacks ipywidgets (it then draws
text bars, which is all normlab needs)."""
import warnings

from tqdm import TqdmWarning

with warnings.catch_warnings():
    warnings.simplefilter("ignore", TqdmWarning)
    from tqdm.auto import tqdm

__all__ = ["tqdm"]
