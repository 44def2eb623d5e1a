"""The proxy-task heads, attached to the backbone output and dropped at inference."""
from torch import nn
from fastreid.layers.weight_init import weights_init_kaiming


class ParsingHead(nn.Module):
    """phi: Deconv (3x3, stride 2) -> BN -> ReLU -> 1x1 Conv to K part logits, at twice the
    feature-map resolution (the softmax is inside the loss)."""

    def __init__(self, in_channels, mid_channels=256, num_classes=8):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(in_channels, mid_channels, 3, stride=2, padding=1,
                                         output_padding=1, bias=False)
        self.bn = nn.BatchNorm2d(mid_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(mid_channels, num_classes, 1)
        nn.init.normal_(self.deconv.weight, std=0.001)
        nn.init.normal_(self.conv.weight, std=0.001)
        nn.init.zeros_(self.conv.bias)

    def forward(self, feat_map):
        return self.conv(self.relu(self.bn(self.deconv(feat_map))))


class AttributeHeads(nn.Module):
    """One FC -> BN -> ReLU -> FC head per attribute over the globally average-pooled feature."""

    def __init__(self, in_dim, num_classes, embed_dim=512):
        super().__init__()
        self.num_classes = tuple(int(m) for m in num_classes)
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(in_dim, embed_dim, bias=False), nn.BatchNorm1d(embed_dim),
                          nn.ReLU(inplace=True), nn.Linear(embed_dim, m))
            for m in self.num_classes)
        self.heads.apply(weights_init_kaiming)

    def forward(self, feat_map):
        e = feat_map.mean(dim=(2, 3))   # GAP
        return [h(e) for h in self.heads]
