"""Intent classifier: a linear SVM over character, word and pinyin n-grams (bot.nlu.text_features),
optionally with sentence vectors appended (bot.nlu.sentence_vectors, ``sentence_vectors: true``).

Chosen over DIET by measurement (docs/NLU_REPORT.md): on our held-out split and on the
independent field set it is more accurate, trains in seconds instead of minutes, and classifies
a message in about a millisecond (about five with sentence vectors: the encoder's forward pass).
The model is stored as plain arrays and JSON (no pickles).

Sentence vectors (the Universal Sentence Encoder the knowledge base uses) bring paraphrases that
share no characters with any training example close to it. The L2-normalised vector, scaled by
``dense_weight``, is appended to the three sparse blocks. A model trained with vectors also stores
a sparse-only SVM: where the encoder is not installed (at training or at load), the classifier
logs a warning and classifies with sparse features only, it never fails.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Dict, List, Optional, Text, Tuple, Type

import numpy as np
from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.classifiers.classifier import IntentClassifier
from rasa.nlu.constants import TOKENS_NAMES
from rasa.nlu.tokenizers.tokenizer import Tokenizer
from rasa.shared.nlu.constants import INTENT, INTENT_NAME_KEY, PREDICTED_CONFIDENCE_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from bot.nlu import sentence_vectors
from bot.nlu.text_features import Block, TextFeaturizer

logger = logging.getLogger(__name__)


@DefaultV1Recipe.register([DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER], is_trainable=True)
class LinearIntentClassifier(GraphComponent, IntentClassifier):
    @classmethod
    def required_components(cls) -> List[Type]:
        return [Tokenizer]

    @staticmethod
    def get_default_config() -> Dict[Text, Any]:
        return {
            "char_ngram_range": [1, 3],
            "word_ngram_range": [1, 1],
            "pinyin_ngram_range": [1, 2],
            # SVM regularisation (larger = fits the training data more closely)
            "C": 0.5,
            # append the message's sentence vector (bot.nlu.sentence_vectors) to the sparse features
            "sentence_vectors": False,
            # length of that vector next to the three sparse blocks (each of length 1)
            "dense_weight": 0.5,
            # SVM margins are turned into confidences with softmax(scale * margin)
            "confidence_scale": 5.0,
            "ranking_length": 10,
            "random_seed": 42,
        }

    @staticmethod
    def required_packages() -> List[Text]:
        return ["sklearn", "pypinyin"]

    def __init__(self, config: Dict[Text, Any], model_storage: ModelStorage, resource: Resource) -> None:
        self.config = {**self.get_default_config(), **config}
        self._model_storage = model_storage
        self._resource = resource
        self.featurizer = self._new_featurizer()
        self.classes: List[str] = []
        self.coef: Optional[np.ndarray] = None
        self.intercept: Optional[np.ndarray] = None
        # with sentence vectors: what the model was trained with, the sparse-only fallback, the encoder
        self.dense: Optional[Dict[str, Any]] = None
        self.sparse_coef: Optional[np.ndarray] = None
        self.sparse_intercept: Optional[np.ndarray] = None
        self.encoder: Optional[Any] = None
        # the weights as prediction uses them (see _prepare)
        self._sparse_t: Optional[np.ndarray] = None
        self._dense_t: Optional[np.ndarray] = None
        self._fallback_t: Optional[np.ndarray] = None

    def _new_featurizer(self) -> TextFeaturizer:
        c = self.config
        return TextFeaturizer(tuple(c["char_ngram_range"]), tuple(c["word_ngram_range"]),
                              tuple(c["pinyin_ngram_range"]))

    @classmethod
    def create(cls, config: Dict[Text, Any], model_storage: ModelStorage, resource: Resource,
               execution_context: ExecutionContext) -> "LinearIntentClassifier":
        return cls(config, model_storage, resource)

    @staticmethod
    def _words(message: Message) -> Optional[List[str]]:
        tokens = message.get(TOKENS_NAMES[TEXT])
        return [t.text for t in tokens] if tokens else None

    def _fit(self, X, y: List[str]) -> Tuple[List[str], np.ndarray, np.ndarray]:
        from sklearn.svm import LinearSVC

        svm = LinearSVC(C=self.config["C"], random_state=self.config["random_seed"], max_iter=5000)
        svm.fit(X, y)
        classes = [str(c) for c in svm.classes_]
        coef = np.asarray(svm.coef_, dtype=np.float32)
        intercept = np.asarray(svm.intercept_, dtype=np.float32)
        if len(classes) == 2:  # binary SVMs have one weight vector: make it one per class
            coef, intercept = np.vstack([-coef[0], coef[0]]), np.array([-intercept[0], intercept[0]])
        return classes, coef, intercept

    def train(self, training_data: TrainingData) -> Resource:
        import scipy.sparse as sp

        examples = [m for m in training_data.intent_examples if m.get(TEXT)]
        labels = sorted({m.get(INTENT) for m in examples})
        if len(labels) < 2:
            logger.warning("LinearIntentClassifier needs at least two intents; not trained")
            self.persist()
            return self._resource
        texts = [m.get(TEXT) for m in examples]
        words = [self._words(m) for m in examples]
        self.featurizer.fit(texts, words)
        X = self.featurizer.transform(texts, words)
        y = [m.get(INTENT) for m in examples]
        self.classes, self.coef, self.intercept = self._fit(X, y)
        self.dense, self.encoder = None, None
        if self.config["sentence_vectors"]:
            self.encoder = sentence_vectors.load_encoder("training the intent classifier without sentence vectors")
        if self.encoder is not None:
            weight = float(self.config["dense_weight"])
            vectors = sentence_vectors.encode(self.encoder, texts)
            # the sparse-only model is kept as the fallback for a server without the encoder
            self.sparse_coef, self.sparse_intercept = self.coef, self.intercept
            _, self.coef, self.intercept = self._fit(sp.hstack([X, sp.csr_matrix(weight * vectors)]).tocsr(), y)
            self.dense = {"encoder": sentence_vectors.ENCODER, "dims": int(vectors.shape[1]), "weight": weight}
        self._prepare()
        self.persist()
        return self._resource

    def _prepare(self) -> None:
        """The weights as features x classes, contiguous and in the features' dtype: a sparse row times
        a transposed float32 view would convert the whole matrix on every message (milliseconds)."""
        n_sparse = self.featurizer.n_features
        self._sparse_t = np.ascontiguousarray(self.coef[:, :n_sparse].T, dtype=np.float64)
        self._dense_t = self._fallback_t = None
        if self.dense is not None:
            self._dense_t = np.ascontiguousarray(self.coef[:, n_sparse:].T, dtype=np.float32)
            self._fallback_t = np.ascontiguousarray(self.sparse_coef.T, dtype=np.float64)

    def _margins(self, texts: List[str], words: List[Optional[List[str]]]) -> np.ndarray:
        X = self.featurizer.transform(texts, words)
        if self.dense is not None and self.encoder is not None:
            try:
                vectors = sentence_vectors.encode(self.encoder, texts)
            except Exception:  # never lose a message to the encoder: classify it on sparse features
                logger.exception("sentence encoder failed; classifying with sparse features only")
            else:
                return (np.asarray(X @ self._sparse_t) + self.dense["weight"] * (vectors @ self._dense_t)
                        + self.intercept)
        if self.dense is not None:  # trained with vectors, but no encoder here
            return np.asarray(X @ self._fallback_t) + self.sparse_intercept
        return np.asarray(X @ self._sparse_t) + self.intercept

    def process(self, messages: List[Message]) -> List[Message]:
        todo = []
        for message in messages:
            if message.get(TEXT) and self.coef is not None:
                todo.append(message)
            else:
                message.set(INTENT, {INTENT_NAME_KEY: None, PREDICTED_CONFIDENCE_KEY: 0.0}, add_to_output=True)
                message.set("intent_ranking", [], add_to_output=True)
        if not todo:
            return messages
        all_margins = self._margins([m.get(TEXT) for m in todo], [self._words(m) for m in todo])
        length = self.config["ranking_length"]
        for message, margins in zip(todo, all_margins):
            scaled = self.config["confidence_scale"] * (margins - margins.max())
            probs = np.exp(scaled) / np.exp(scaled).sum()
            order = np.argsort(-probs)
            ranking = [{INTENT_NAME_KEY: self.classes[i], PREDICTED_CONFIDENCE_KEY: float(probs[i])} for i in order]
            message.set(INTENT, ranking[0], add_to_output=True)
            message.set("intent_ranking", ranking[:length] if length > 0 else ranking, add_to_output=True)
        return messages

    def process_training_data(self, training_data: TrainingData) -> TrainingData:
        return training_data

    def persist(self) -> None:
        with self._model_storage.write_to(self._resource) as directory:
            meta = {"classes": self.classes,
                    "vocabularies": [b.vocabulary for b in self.featurizer.blocks],
                    "sentence_vectors": self.dense}
            (directory / "model.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
            if self.coef is not None:
                arrays = {"coef": self.coef, "intercept": self.intercept,
                          **{f"idf{i}": b.idf for i, b in enumerate(self.featurizer.blocks)}}
                if self.dense is not None:
                    arrays.update(sparse_coef=self.sparse_coef, sparse_intercept=self.sparse_intercept)
                np.savez_compressed(directory / "weights.npz", **arrays)

    @classmethod
    def load(cls, config: Dict[Text, Any], model_storage: ModelStorage, resource: Resource,
             execution_context: ExecutionContext, **kwargs: Any) -> "LinearIntentClassifier":
        component = cls(config, model_storage, resource)
        try:
            with model_storage.read_from(resource) as directory:
                meta = json.loads((directory / "model.json").read_text(encoding="utf-8"))
                weights_file = directory / "weights.npz"
                if not weights_file.exists():
                    return component
                dense = meta.get("sentence_vectors")
                with np.load(weights_file, allow_pickle=False) as weights:
                    coef, intercept = weights["coef"], weights["intercept"]
                    blocks = [Block(vocab, weights[f"idf{i}"]) for i, vocab in enumerate(meta["vocabularies"])]
                    if dense is not None:
                        component.sparse_coef = weights["sparse_coef"]
                        component.sparse_intercept = weights["sparse_intercept"]
                component.coef, component.intercept, component.featurizer.blocks = coef, intercept, blocks
                component.classes = meta["classes"]
                component.dense = dense
                component._prepare()
        except (ValueError, OSError, KeyError) as exc:
            logger.warning("LinearIntentClassifier could not be loaded (%s); it will predict nothing", exc)
            component.coef = None
            return component
        if component.dense is not None:
            component.encoder = sentence_vectors.load_encoder(
                "the intent classifier was trained with sentence vectors and falls back to its sparse-only model")
        return component
