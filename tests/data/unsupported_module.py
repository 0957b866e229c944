"""A model calling a module arasc does not lower (Softplus), nested two levels deep."""
import torch


class Head(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)
        self.act = torch.nn.Softplus()

    def forward(self, x):
        return self.act(self.proj(x))  # the unsupported call


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.head = Head()

    def forward(self, x):
        return self.head(x)


def factory():
    return Model().eval(), (torch.randn(2, 8),)
