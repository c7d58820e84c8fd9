"""Tiny transformers models saved with save_pretrained, built here without any download: a BERT sentence classifier
with a WordPiece tokenizer made from the words of real sentences, and a ViT digit classifier with its image
processor, each trained for a few seconds on real data (the reviews below, sample_data's digits). Real
architectures and real files: what `hf:FOLDER` reads. Trained, not random, so that their predictions have margins:
a random classifier's near-tied logits flip under any int8 rounding, on one CPU and not on another."""
from __future__ import annotations

import re
from pathlib import Path

# real review-style sentences with their sentiment, for calibration, validation and the text-file formats
REVIEWS = [
    ("The film is a delight from the first scene to the last.", "positive"),
    ("I laughed out loud more times than I can count.", "positive"),
    ("The acting is wooden and the plot makes no sense.", "negative"),
    ("A warm, funny and surprisingly moving story.", "positive"),
    ("Two hours of my life I will never get back.", "negative"),
    ("The soundtrack alone is worth the price of the ticket.", "positive"),
    ("The dialogue is clumsy and the jokes fall flat.", "negative"),
    ("Every performance rings true, even in the small roles.", "positive"),
    ("It drags badly in the middle and never recovers.", "negative"),
    ("A clever script that trusts its audience.", "positive"),
    ("The ending was predictable and strangely rushed.", "negative"),
    ("Beautifully shot, with a score that lingers for days.", "positive"),
    ("I checked my watch every ten minutes.", "negative"),
    ("The best thing I have seen in the cinema this year.", "positive"),
    ("The characters are thin and the story is thinner.", "negative"),
    ("A gentle comedy that made the whole family smile.", "positive"),
    ("Loud, long and completely forgettable.", "negative"),
    ("The lead actress gives the performance of her career.", "positive"),
    ("The special effects cannot save a lazy script.", "negative"),
    ("I would happily watch it again tomorrow.", "positive"),
    ("The pacing is slow and the scenes feel random.", "negative"),
    ("A sharp, honest film about growing up.", "positive"),
    ("Nothing happens for the first hour.", "negative"),
    ("The cast has wonderful chemistry together.", "positive"),
    ("The sequel is a tired copy of the original.", "negative"),
    ("Smart, tender and never boring.", "positive"),
    ("The camera work gave me a headache.", "negative"),
    ("It left me thinking about it for a week.", "positive"),
    ("A mess of a movie with no heart at all.", "negative"),
    ("The story is simple but told with great care.", "positive"),
    ("I walked out before the end.", "negative"),
    ("A small film with a very big heart.", "positive"),
    ("The villain is silly and never frightening.", "negative"),
    ("Funny, kind and full of life.", "positive"),
    ("The plot holes are too large to ignore.", "negative"),
    ("One of the most charming films of the decade.", "positive"),
]
LABELS = {0: "negative", 1: "positive"}
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _train(model, inputs: dict, labels, steps: int, lr: float):
    """AdamW on random batches of 64, seeded; the model comes back in eval mode."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        pick = torch.randint(0, len(labels), (64,), generator=generator)
        loss = torch.nn.functional.cross_entropy(model(**{k: v[pick] for k, v in inputs.items()}).logits,
                                                 labels[pick])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def write_vocab(path: Path) -> Path:
    """A WordPiece vocabulary: the special tokens, every word of the reviews, letters and punctuation."""
    words = sorted({w for text, _ in REVIEWS for w in re.findall(r"[a-z]+", text.lower())})
    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens = dict.fromkeys([*SPECIAL, *words, *letters, *".,!?'-", *(f"##{c}" for c in letters)])  # "a" is both
    path.write_text("\n".join(tokens) + "\n")
    return path


def save_bert_classifier(folder: Path) -> Path:
    """BertForSequenceClassification (hidden 32, one layer of 2 heads: each layer costs the exporters time, and one
    shows all they do) with its tokenizer, labels negative/positive."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizerFast(vocab=str(write_vocab(folder.parent / f"{folder.name}-vocab.txt")))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, id2label=LABELS,
                        label2id={v: k for k, v in LABELS.items()})
    texts, labels = zip(*REVIEWS)
    inputs = dict(tokenizer(list(texts), padding="max_length", max_length=32, return_tensors="pt"))
    targets = torch.tensor([1 if label == "positive" else 0 for label in labels])
    _train(BertForSequenceClassification(config), inputs, targets, steps=150, lr=3e-3).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_vit_classifier(folder: Path) -> Path:
    """ViTForImageClassification (32x32 images, 8x8 patches, hidden 32, one layer of 2 heads) for digits 0-9,
    with its image processor."""
    import numpy as np
    import torch
    from PIL import Image
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    from edgekit.data.mnist import read_split
    from edgekit.data.pixels import image_to_input

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=64, id2label={i: str(i) for i in range(10)},
                       label2id={str(i): i for i in range(10)})
    processor = ViTImageProcessorPil(size={"height": 32, "width": 32}, image_mean=[0.5, 0.5, 0.5],
                                     image_std=[0.25, 0.25, 0.25])
    train = read_split("train")
    images = np.stack([image_to_input(Image.fromarray(image), (32, 32), False, processor.rescale_factor,
                                      processor.image_mean, processor.image_std) for image in train.images])
    model = _train(ViTForImageClassification(config), {"pixel_values": torch.from_numpy(images)},
                   torch.from_numpy(train.labels.astype(np.int64)), steps=800, lr=5e-3)  # 83% on the val split
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
