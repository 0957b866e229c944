"""A model torch.fx.symbolic_trace cannot trace (Python control flow on a shape-derived
proxy), which torch.export captures: the frontend's fallback path."""
import torch


class ShapeBranch(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.small = torch.nn.Linear(8, 4)
        self.large = torch.nn.Linear(8, 4)

    def forward(self, x):
        if x.shape[0] > 1:  # fx cannot branch on a proxy; export specialises the static shape
            return torch.relu(self.small(x))
        return self.large(x)


def factory():
    torch.manual_seed(0)
    return ShapeBranch().eval(), (torch.randn(3, 8),)
