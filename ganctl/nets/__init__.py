"""Generators and discriminators. Every network takes plain keyword arguments; the values that
come from the data (img_channels, img_size, num_classes) are passed when it is built, its own
(widths, norms) have no defaults here: they live in conf/model/*.yaml.

    G = ganctl.nets.dcgan.Generator(z_dim=100, img_channels=1, img_size=28, num_classes=10,
                                    ngf=64, embed_dim=32, cbn=False, codes=0, upsample="transposed",
                                    cond="concat", noise_injection=False)
    fake = G(torch.randn(16, 100), torch.randint(0, 10, (16,)))   # (16, 1, 28, 28) in [-1, 1]

Discriminators return one logit per sample, shape (B,).
"""
