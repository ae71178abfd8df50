"""Words the generator writes titles, descriptions and reviews with.

Each genre has its own keywords, and an item's latent vector is built from its genre and keywords,
so item text carries real signal about taste (the tagger and the item tower can learn from it).
"""

GENRES: dict[str, list[str]] = {
    "Mystery & Thrillers": ["detective", "murder", "suspense", "crime", "heist", "noir", "conspiracy", "spy", "forensic", "whodunit", "kidnapping", "cold case"],
    "Science Fiction": ["space opera", "time travel", "robots", "dystopia", "aliens", "cyberpunk", "starship", "colony", "artificial intelligence", "first contact", "terraforming", "post-apocalyptic"],
    "Fantasy": ["dragons", "magic", "quest", "sorcery", "elves", "epic battle", "prophecy", "kingdom", "witches", "mythical creatures", "sword", "dark lord"],
    "Romance": ["love story", "second chance", "enemies to lovers", "wedding", "small town", "billionaire", "regency", "holiday romance", "forbidden love", "romantic comedy", "summer fling", "soulmates"],
    "History": ["world war", "ancient rome", "civil war", "medieval", "empire", "revolution", "cold war", "archaeology", "dynasty", "colonial", "renaissance", "naval history"],
    "Biographies & Memoirs": ["memoir", "founder", "musician", "athlete", "president", "childhood", "survivor", "explorer", "artist life", "scientist life", "leadership", "family saga"],
    "Cooking": ["baking", "vegan", "grilling", "italian cuisine", "slow cooker", "desserts", "bread", "meal prep", "mediterranean", "street food", "fermentation", "comfort food"],
    "Children's Books": ["picture book", "bedtime story", "animals", "alphabet", "friendship", "adventure for kids", "dinosaurs", "fairy tale", "counting", "school days", "princess", "pirates"],
    "Business & Money": ["investing", "startup", "leadership skills", "marketing", "personal finance", "negotiation", "management", "economics", "real estate", "productivity", "sales", "entrepreneurship"],
    "Self-Help": ["mindfulness", "habits", "motivation", "confidence", "relationships", "stress relief", "happiness", "personal growth", "resilience", "time management", "anxiety", "purpose"],
    "Health & Fitness": ["nutrition", "weight loss", "yoga", "running", "strength training", "diet plan", "sleep", "keto", "meditation", "wellness", "cardio", "healthy aging"],
    "Computers & Technology": ["python programming", "machine learning", "web development", "cybersecurity", "data science", "cloud computing", "algorithms", "software engineering", "databases", "networking", "linux", "javascript"],
    "Science & Math": ["physics", "astronomy", "evolution", "genetics", "calculus", "chemistry", "neuroscience", "climate", "quantum", "ecology", "statistics", "geology"],
    "Religion & Spirituality": ["prayer", "bible study", "buddhism", "faith", "devotional", "theology", "spiritual journey", "christian living", "meditation practice", "scripture", "church history", "grace"],
    "Travel": ["europe", "road trip", "backpacking", "travel guide", "japan", "national parks", "adventure travel", "city guide", "hiking trails", "islands", "culture", "budget travel"],
    "Arts & Photography": ["painting", "photography", "drawing", "architecture", "graphic design", "sculpture", "art history", "watercolor", "portraits", "calligraphy", "film", "fashion"],
    "Comics & Graphic Novels": ["superheroes", "manga", "graphic memoir", "villains", "anthology", "webcomic", "anime", "sci-fi comics", "horror comics", "comic strips", "mutants", "vigilante"],
    "Teen & Young Adult": ["coming of age", "high school", "first love", "dystopian teens", "boarding school", "vampires", "chosen one", "friendship drama", "identity", "summer camp", "rebellion", "magic academy"],
    "Politics & Social Sciences": ["democracy", "elections", "sociology", "philosophy", "justice", "immigration", "foreign policy", "inequality", "propaganda", "civil rights", "geopolitics", "ethics"],
    "Poetry": ["sonnets", "haiku", "free verse", "love poems", "nature poetry", "epic poem", "spoken word", "elegy", "anthology of poems", "ballads", "modern poetry", "lyric"],
}

TITLE_OPENERS = ["The", "A Guide to", "Secrets of", "The Art of", "Beyond", "Inside", "The Last", "Notes on", "The Little Book of", "Chronicles of", "Mastering", "The Hidden"]
TITLE_NOUNS = ["Journey", "Story", "Handbook", "Legacy", "Promise", "Shadows", "Light", "Path", "Season", "Code", "Garden", "Map"]
STORES = ["Penguin", "HarperCollins", "Simon & Schuster", "Macmillan", "Hachette", "Scholastic", "Wiley", "O'Reilly", "Chronicle", "Vintage", "Random House", "Independent Press"]

REVIEW_TITLES = {
    1: ["Very disappointing", "Not for me", "Waste of money", "Could not finish"],
    2: ["Below expectations", "Meh", "Had potential", "Not great"],
    3: ["It was okay", "Decent read", "Mixed feelings", "Average"],
    4: ["Really good", "Enjoyed it", "Worth reading", "Solid book"],
    5: ["Loved it!", "Five stars", "A must read", "Absolutely wonderful"],
}
REVIEW_OPENERS = {
    1: "I really wanted to like this but",
    2: "Some good moments, although",
    3: "An average take where",
    4: "A well written book where",
    5: "An outstanding book where",
}
