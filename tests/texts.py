"""Real text for tests: varied lengths, scripts, code and whitespace."""

DOCUMENTS = [
    "The capital of China is Beijing.",
    "Gravity is a force that attracts two bodies towards each other. It gives weight to physical "
    "objects and is responsible for the movement of planets around the sun.",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "北京是中华人民共和国的首都。",
    "Les embeddings multilingues permettent la recherche translingue — même avec des accents: café, naïve.",
    "   leading and trailing whitespace   ",
    "Numbers 1234567890 and symbols {}[]()<>!? and an emoji 🚀.",
    "A",
]
QUERIES = ["What is the capital of China?", "Explain gravity", "fibonacci in python", "首都"]
