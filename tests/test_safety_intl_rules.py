"""The Spanish, German, French, Portuguese and Italian crisis rules as patterns, not lines (sixth pass of issue 13):
for each language, fresh phrasings of every kind that must hit, and idioms, denials, someone else's story,
discussion and a past that is over that must not. None of these statements is in any crisis set (checked below),
so they test what the patterns reach beyond the lines they were written from. Rules only: fast, no encoder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from crisis_sets import CRISIS_CATEGORIES, OTHER_LANGUAGES, statement_key

from cbtcompare.safety import detect_crisis

DATA = Path(__file__).parent / "data"

# language -> crisis kind (tests/crisis_sets.py's) -> statements that must hit
MUST_HIT: dict[str, dict[str, tuple[str, ...]]] = {
    "es": {
        "wish_to_be_dead": ("ojala no me despertara mañana, de verdad", "estarian todos mejor sin mi, lo se"),
        "ideation_no_method": ("llevo semanas con ganas de quitarme la vida", "no paro de pensar en matarme"),
        "ideation_with_method": ("pienso en tirarme desde el puente de la ria", "me veo colgandome en el trastero"),
        "ideation_with_intent": ("si suspendo otra vez me suicido", "lo he decidido, voy a acabar con mi vida"),
        "ideation_with_plan": (
            "el sabado de madrugada me tomo todas las pastillas que tengo",
            "tengo pensado como y donde hacerlo",
        ),
        "preparatory_behaviour": ("ya he escrito mi carta de despedida", "busque la dosis letal del paracetamol"),
        "access_to_means": (
            "mi tio guarda una escopeta en el desvan y se donde esta",
            "tengo un monton de somniferos escondidos",
        ),
        "past_attempt": ("la semana pasada me tome una caja entera de pastillas", "ya lo he intentado dos veces"),
        "self_injury": ("me he vuelto a cortar esta noche", "me hago cortes en las piernas para sentir algo"),
        "harm_from_others": ("mi pareja me pega cuando bebe", "me amenazo con matarme si lo dejo"),
        "harm_to_others": ("tengo miedo de hacerle daño a mi hijo", "me dan ganas de ahogar al bebe cuando llora"),
        "acute_danger": (
            "acabo de tragarme todas las pastillas de mi madre",
            "estoy en el borde del puente y voy a saltar",
        ),
    },
    "de": {
        "wish_to_be_dead": ("ich wünschte ich wäre einfach tot", "es wär besser ohne mich für alle"),
        "ideation_no_method": ("ich will mich umbringen, echt jetzt", "ich denk ständig dran, mir das leben zu nehmen"),
        "ideation_with_method": ("ich überleg mich vor die s-bahn zu werfen", "ich will mich erhängen"),
        "ideation_with_intent": ("ich werde mich umbringen, das ist sicher", "wenn er geht, bring ich mich um"),
        "ideation_with_plan": ("heute nacht nehm ich alle schlaftabletten", "am freitag spring ich von der brücke"),
        "preparatory_behaviour": (
            "ich hab schon einen abschiedsbrief geschrieben",
            "hab recherchiert, welche dosis tödlich ist",
        ),
        "access_to_means": ("mein vater hat ein gewehr im keller", "ich hab tabletten gehortet, ganz viele"),
        "past_attempt": (
            "ich hab letzten monat versucht mich umzubringen",
            "meine schwester hat mir die tabletten aus der hand gerissen",
        ),
        "self_injury": ("seit der schule ritz ich mich fast jede nacht", "hab mich mit der klinge am arm geschnitten"),
        "harm_from_others": ("mein vater schlägt mich, wenn er getrunken hat", "er hat gedroht mich umzubringen"),
        "harm_to_others": ("ich hab angst, meinem baby was anzutun", "ich hab den drang, mein kind zu schütteln"),
        "acute_danger": (
            "hab eben die ganze packung tabletten geschluckt",
            "ich steh gerade auf der brücke und spring gleich",
        ),
    },
    "fr": {
        "wish_to_be_dead": ("j'ai envie de mourir, c'est tout", "je voudrais ne plus me reveiller"),
        "ideation_no_method": ("je pense a me suicider depuis des semaines", "j'ai envie de me foutre en l'air"),
        "ideation_with_method": ("je pense a me jeter sous un train", "j'ai envie de me pendre"),
        "ideation_with_intent": ("je vais me tuer, j'en peux plus", "s'il me quitte je me suicide"),
        "ideation_with_plan": ("ce soir je prends tous mes cachets", "demain je saute du pont, c'est prevu"),
        "preparatory_behaviour": ("j'ai ecrit ma lettre d'adieu", "j'ai cherche la dose mortelle de paracetamol"),
        "access_to_means": ("mon oncle a un fusil dans le garage", "j'ai des boites de somniferes de cote"),
        "past_attempt": (
            "j'ai deja fait une tentative de suicide le mois dernier",
            "ma soeur m'a arrache les cachets des mains",
        ),
        "self_injury": ("je me scarifie encore tous les soirs", "je me brule les bras avec des cigarettes"),
        "harm_from_others": ("mon copain me frappe quand il a bu", "il a menace de me tuer si je pars"),
        "harm_to_others": ("j'ai peur de faire du mal a mon bebe", "j'ai des pensees de tuer mon voisin"),
        "acute_danger": ("je viens d'avaler toute la boite de somniferes", "je suis sur le pont et je vais sauter"),
    },
    "pt": {
        "wish_to_be_dead": ("queria morrer dormindo", "todo mundo estaria melhor sem mim"),
        "ideation_no_method": ("penso em me matar todo dia", "to pensando em tirar minha propria vida"),
        "ideation_with_method": ("penso em me jogar da ponte", "queria me enforcar no banheiro"),
        "ideation_with_intent": ("vou me matar, ja decidi", "se ele for embora eu me mato"),
        "ideation_with_plan": ("hoje a noite vou tomar todos os remedios", "no sabado pulo do predio da firma"),
        "preparatory_behaviour": (
            "escrevi uma carta de despedida pra minha mae",
            "pesquisei qual a dose letal de rivotril",
        ),
        "access_to_means": ("meu tio tem uma arma no guarda-roupa", "tenho caixas de remedio escondidas"),
        "past_attempt": ("mes passado eu tentei me matar", "minha irma tirou os comprimidos da minha mao"),
        "self_injury": ("me cortei de novo no banho", "me queimo com cigarro quando fico mal"),
        "harm_from_others": ("meu pai me bate quando bebe", "ele ameacou me matar se eu contar"),
        "harm_to_others": ("tenho medo de machucar meu filho", "tenho vontade de sufocar meu bebe quando chora"),
        "acute_danger": ("acabei de tomar todos os meus remedios", "to na ponte e vou pular agora"),
    },
    "it": {
        "wish_to_be_dead": ("vorrei morire e basta", "starebbero tutti meglio senza di me"),
        "ideation_no_method": ("penso di uccidermi ogni giorno", "ho voglia di farla finita"),
        "ideation_with_method": ("penso di buttarmi dal ponte", "voglio impiccarmi in garage"),
        "ideation_with_intent": ("mi ammazzo, ho deciso", "se mi lascia la faccio finita"),
        "ideation_with_plan": ("stasera prendo tutte le pillole che ho", "domenica mi butto dal ponte della ferrovia"),
        "preparatory_behaviour": ("ho scritto la lettera d'addio", "ho cercato la dose letale di tachipirina"),
        "access_to_means": ("mio zio ha un fucile in cantina", "ho nascosto un sacco di pillole"),
        "past_attempt": ("il mese scorso ho tentato il suicidio", "mia sorella mi ha tolto le pillole dalle mani"),
        "self_injury": ("mi sono tagliata di nuovo ieri sera", "mi faccio dei tagli sulle gambe"),
        "harm_from_others": ("mio padre mi picchia quando beve", "mi ha minacciato di uccidermi se lo lascio"),
        "harm_to_others": (
            "ho paura di fare del male al mio bambino",
            "ho voglia di soffocare il neonato quando piange",
        ),
        "acute_danger": ("ho appena preso tutte le pillole", "sono sul ponte e sto per saltare"),
    },
}

# idioms with death and kill words, denials, someone else's story, fiction and a past that is over
MUST_NOT_HIT: dict[str, tuple[str, ...]] = {
    "es": (
        "me muero de la risa con tus audios",
        "no quiero morirme, solo estoy cansada",
        "ese examen me mato",
        "mi prima se corta, como la ayudo",
        "en el libro el malo se suicida",
        "hace años me cortaba, ya lo supere",
        "me mata de risa este meme",
        "jamas me quitaria la vida, tengo a mis hijos",
        "en el telediario hablaron de un intento de suicidio en la carcel",
        "me tiro en el sofa y no me muevo en todo el dia",
    ),
    "de": (
        "ich lach mich tot über den film",
        "ich will nicht sterben, keine sorge",
        "die prüfung hat mich umgebracht",
        "meine freundin ritzt sich, was soll ich tun",
        "im krimi bringt der täter sich um",
        "vor jahren wollte ich sterben, das ist vorbei",
        "ich bin todmüde, gute nacht",
        "ich würde mich nie umbringen, keine angst",
        "in der doku ging es um suizidgedanken bei jugendlichen",
        "die hitze bringt mich um, ich geh baden",
    ),
    "fr": (
        "je suis morte de rire",
        "je veux pas mourir, je suis juste crevee",
        "cet exam m'a tuee",
        "ma copine se scarifie, comment l'aider",
        "dans le roman le heros se suicide",
        "il y a des annees je voulais mourir, c'est derriere moi",
        "ce film est a mourir de rire",
        "je me suiciderais jamais, t'inquiete",
        "l'article parle des tentatives de suicide en prison",
        "mon pere va me tuer, j'ai raye la voiture",
    ),
    "pt": (
        "to morrendo de rir kkkk",
        "nao quero morrer, so to cansada",
        "essa prova me matou",
        "minha amiga se corta, como ajudo",
        "no livro o vilao se mata",
        "ha anos eu me cortava, isso ja passou",
        "morri de vergonha na reuniao",
        "eu nunca me mataria, fica tranquila",
        "o jornal falou de tentativa de suicidio na prisao",
        "minha mae vai me matar, quebrei o vaso",
    ),
    "it": (
        "muoio dal ridere",
        "non voglio morire, sono solo stanca",
        "quell'esame mi ha ucciso",
        "la mia amica si taglia, come la aiuto",
        "nel romanzo il cattivo si uccide",
        "anni fa volevo morire, ora sto bene",
        "sono stanca morta, vado a letto",
        "non mi ucciderei mai, stai tranquilla",
        "il tg ha parlato di un tentato suicidio in carcere",
        "mi butto sul divano e dormo",
    ),
}


def test_every_language_has_every_kind_and_its_own_look_alikes() -> None:
    assert set(MUST_HIT) == set(MUST_NOT_HIT) == set(OTHER_LANGUAGES)
    for kinds in MUST_HIT.values():
        assert set(kinds) == CRISIS_CATEGORIES and all(len(texts) >= 2 for texts in kinds.values())
    assert all(len(texts) >= 8 for texts in MUST_NOT_HIT.values())


def test_no_statement_here_is_in_a_crisis_set() -> None:
    ours = {statement_key(t) for kinds in MUST_HIT.values() for texts in kinds.values() for t in texts}
    ours |= {statement_key(t) for texts in MUST_NOT_HIT.values() for t in texts}
    shared = []
    for path in sorted(DATA.glob("crisis_*.jsonl")):
        lines = path.read_text(encoding="utf-8").splitlines()
        theirs = {statement_key(json.loads(line)["text"]) for line in lines if line.strip()}
        if ours & theirs:
            shared.append(path.name)  # the set's name only: a held-out line is never printed
    assert shared == []


@pytest.mark.parametrize(
    ("language", "kind", "text"),
    [(lang, kind, t) for lang, kinds in MUST_HIT.items() for kind, texts in kinds.items() for t in texts],
)
def test_fresh_phrasing_hits(language: str, kind: str, text: str) -> None:
    result = detect_crisis(text, use_classifier=False)
    assert result.crisis, (language, kind, text)


@pytest.mark.parametrize(("language", "text"), [(lang, t) for lang, texts in MUST_NOT_HIT.items() for t in texts])
def test_look_alike_does_not_hit(language: str, text: str) -> None:
    result = detect_crisis(text, use_classifier=False)
    assert not result.crisis, (language, text, result.matched)


@pytest.mark.parametrize(
    ("over", "back"),
    [
        (
            "hace años intente suicidarme, ya lo supere",
            "hace años intente suicidarme, ya lo supere, pero ultimamente vuelvo a pensarlo",
        ),
        (
            "vor jahren hab ich mich geritzt, das ist vorbei",
            "vor jahren hab ich mich geritzt, das ist vorbei, aber jetzt wieder",
        ),
        (
            "il y a des annees j'ai fait une ts, c'est derriere moi",
            "il y a des annees j'ai fait une ts, c'est derriere moi mais ca recommence",
        ),
        ("ha anos tentei me matar, superei", "ha anos tentei me matar, superei, mas de novo to pensando nisso"),
        (
            "anni fa ho tentato il suicidio, l'ho superato",
            "anni fa ho tentato il suicidio, l'ho superato ma ultimamente ci ripenso",
        ),
    ],
)
def test_a_past_that_is_over_is_not_a_hit_unless_a_sign_of_now_says_it_is_back(over: str, back: str) -> None:
    assert not detect_crisis(over, use_classifier=False).crisis
    assert detect_crisis(back, use_classifier=False).crisis


@pytest.mark.parametrize(
    ("someone_else", "mine"),
    [
        ("mi hermana tiene pensamientos suicidas, como la ayudo", "mi hermana se fue y tengo pensamientos suicidas"),
        ("wie frag ich meinen sohn, ob er suizidgedanken hat", "mein sohn ist weg und ich hab suizidgedanken"),
        (
            "comment demander a mon fils s'il a des idees suicidaires",
            "mon fils est parti et j'ai des idees suicidaires",
        ),
        (
            "como pergunto pro meu irmao se ele tem pensamentos suicidas",
            "meu irmao foi embora e eu tenho pensamentos suicidas",
        ),
        ("come chiedo a mio figlio se ha pensieri suicidi", "mio figlio se n'e andato e ho pensieri suicidi"),
    ],
)
def test_someone_elses_story_is_not_read_as_the_speakers(someone_else: str, mine: str) -> None:
    assert not detect_crisis(someone_else, use_classifier=False).crisis
    assert detect_crisis(mine, use_classifier=False).crisis


def test_an_english_rule_hit_on_a_statement_likeliest_in_another_language_takes_that_languages_excuses() -> None:
    """The English rules read statements the detector is unsure of; "em 2013 ... hoje estou bem" is still over."""
    assert not detect_crisis("o telejornal falou de overdoses numa festa", use_classifier=False).crisis
    assert detect_crisis("i took an overdose an hour ago", use_classifier=False).crisis
