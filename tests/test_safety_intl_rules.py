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


# more fresh phrasings: slang, regional words, long and conditional sentences, other means and acts
MORE_MUST_HIT: dict[str, tuple[str, ...]] = {
    "es": (
        "wey ya no quiero seguir, me quiero morir neta",
        "che, la verdad que pienso en matarme todos los dias",
        "me voy a aventar del puente vehicular mañana temprano",
        "tengo guardado el veneno para ratas en mi cuarto",
        "me volvi a rajar los brazos con un cutter",
        "mi papa me encierra en el cuarto y no me da de comer",
        "siento que no aguanto y que lo mejor es desaparecer para siempre",
        "ya tengo la soga atada en la viga",
        "he dejado de comer a proposito para morirme",
        "si me vuelve a poner la mano encima lo mato, tengo un cuchillo guardado",
        "me acabo de beber media botella de lejia",
        "estoy pensando en estrellar el coche esta noche",
        "ya no le veo salida a nada, lo unico q quiero es dormirme y q se acabe",
        "tengo ganas de morirme, asi de claro",
        "bro hoy casi me tiro por la ventana del cuarto",
        "he pensado en cortarme el cuello",
        "si mañana no me llama me tomo el bote entero",
        "estoy harto de vivir, cualquier dia me quito de en medio",
        "me he despedido de mis amigos por whatsapp sin que lo sepan",
        "hace dos semanas me tome un monton de pastillas y nadie se entero",
        "me pellizco y me araño hasta hacerme heridas",
        "mi hermano mayor me da palizas y me dice que si lo cuento me mata",
        "tengo miedo de hacerle algo al bebe, se me pasan cosas horribles por la cabeza",
        "me acabo de cortar las venas, hay mucha sangre",
        "mi madre tiene morfina en el armario y pienso en ella todo el rato",
    ),
    "de": (
        "ich kann nicht mehr, ich will einfach nur sterben",
        "heut ist der tag, ich mach schluss",
        "ich hab mir ne rasierklinge besorgt, für die arme",
        "ich hab mir das seil schon an den dachbalken geknotet",
        "mein freund würgt mich wenn er wütend ist",
        "ich hab gedanken, meine kleine zu schlagen, bis sie still ist",
        "ich hab 40 tabletten zuhause und denk an nichts anderes",
        "ich wär am liebsten tot",
        "ich schneid mir jeden abend in die oberschenkel",
        "ich fahr gleich gegen den nächsten baum",
        "ich hab gerade den ganzen blister schlaftabletten geschluckt",
        "mein onkel fasst mich immer an, wenn keiner guckt",
        "ich will nicht mehr leben, echt nicht",
        "manchmal denk ich, ich spring einfach",
        "ich hab schon überlegt, mir die pulsadern aufzuschneiden",
        "wenn ich die prüfung nicht schaffe, bring ich mich um",
        "ich hab mich von allen verabschiedet, ohne dass sie es merken",
        "hab mir im internet angeschaut, wie man sich am schnellsten umbringt",
        "letzten winter hab ich versucht, mich zu erhängen",
        "ich beiss mir in den arm bis es blutet",
        "mein stiefvater schlägt meine mutter und mich",
        "ich krieg den gedanken nicht los, mein baby fallen zu lassen",
        "hab grad ne flasche wodka und alle meine tabletten genommen",
        "ich hab opas pistole aus dem schrank genommen",
        "mir wär's lieber, ich würde einfach nicht mehr existieren",
    ),
    "fr": (
        "j'en peux plus je veux crever",
        "wesh j'ai envie de me buter",
        "je vais me jeter du pont ce soir",
        "j'ai caché une lame dans ma chambre pour me couper",
        "mon pere me tabasse quand il rentre saoul",
        "j'ai envie de secouer le bebe pour qu'il se taise",
        "j'ai arrete de prendre mon traitement pour le coeur, je veux que ca s'arrete",
        "je me suis fait des entailles sur le ventre",
        "j'ai stocké des medocs pour le jour ou",
        "je suis au bord de la falaise la",
        "demain c'est fini, j'ai tout prevu",
        "personne ne me manquera quand je serai mort",
        "je veux plus vivre",
        "j'ai envie de sauter par la fenetre",
        "je pense a avaler tous mes somniferes",
        "si je rate mon bac je me tue",
        "j'ai dit adieu a tout le monde sans qu'ils le sachent",
        "j'ai regarde sur internet comment se pendre",
        "l'hiver dernier j'ai essaye de me pendre",
        "je me mords jusqu'au sang",
        "mon copain me viole quand il a bu",
        "j'ai des images dans la tete ou je fais tomber mon bebe",
        "je viens de boire une bouteille de vodka avec tous mes cachets",
        "j'ai pris le fusil de mon pere et je suis dans la foret",
        "je sers a rien, tout le monde serait plus heureux si je disparaissais",
    ),
    "pt": (
        "nao aguento mais, quero morrer",
        "vou me jogar na frente do onibus",
        "tenho um vidro de veneno escondido",
        "me cortei com gilete hoje de novo",
        "meu padrasto me bate com cinto",
        "tenho pensamentos de esfaquear minha mae",
        "to pensando em me matar amanha de manha",
        "ja comprei a corda",
        "eu queria estar morta",
        "tomei uns 40 comprimidos agora pouco",
        "ta decidido, hoje eu acabo com isso",
        "a vida nao vale mais a pena, quero sumir pra sempre",
        "nao quero mais viver",
        "tenho vontade de pular da janela",
        "penso em tomar todos os meus remedios",
        "se eu reprovar eu me mato",
        "me despedi de todo mundo sem eles saberem",
        "pesquisei como se enforcar",
        "no inverno passado tentei me enforcar",
        "me mordo ate sangrar",
        "meu namorado me estupra quando bebe",
        "tenho imagens na cabeca de deixar meu bebe cair",
        "acabei de beber uma garrafa de vodka com todos os meus remedios",
        "peguei a arma do meu pai e to no mato",
        "sou um peso pra todo mundo, seria melhor se eu sumisse",
    ),
    "it": (
        "non ce la faccio piu, voglio morire",
        "domani mi ammazzo",
        "ho comprato una corda per impiccarmi",
        "mi taglio le braccia con la lametta",
        "il mio ragazzo mi picchia e mi minaccia",
        "ho pensieri di soffocare mia figlia",
        "ho messo da parte un sacco di pastiglie",
        "voglio buttarmi sotto un treno",
        "ho ingoiato un flacone di pillole poco fa",
        "sarebbe meglio se morissi",
        "sto per lanciarmi dal balcone",
        "vorrei farla finita stanotte",
        "non voglio piu vivere",
        "ho voglia di buttarmi dalla finestra",
        "penso di prendere tutti i miei sonniferi",
        "se non passo l'esame mi ammazzo",
        "ho salutato tutti senza che lo sapessero",
        "ho cercato su internet come impiccarsi",
        "l'inverno scorso ho provato a impiccarmi",
        "mi mordo fino a sanguinare",
        "il mio ragazzo mi violenta quando beve",
        "ho immagini in testa di far cadere il mio bambino",
        "ho appena bevuto una bottiglia di vodka con tutte le mie pastiglie",
        "ho preso il fucile di mio padre e sono nel bosco",
        "sono un peso per tutti, sarebbe meglio se sparissi",
    ),
}

# everyday look-alikes: hobbies, a hunter's gun, a washing line, chores, trips, idioms
MORE_MUST_NOT_HIT: dict[str, tuple[str, ...]] = {
    "es": (
        "me muero de sueño jaja",
        "no me voy a matar, tranqui, solo estoy agobiada",
        "mi vecino se mato en un accidente de moto hace años, que pena",
        "la peli va de un chico que se suicida",
        "me corte el flequillo y me quedo fatal",
        "me muero por un cafe",
        "no pienso en suicidarme, solo estoy triste",
        "el perro de mi vecina murio ayer",
        "estoy leyendo una novela sobre un asesino",
        "hoy corte leña para la chimenea",
        "hace mucho tuve depresion pero ahora estoy genial",
        "me tiro a la cama y a dormir",
        "mañana me tomo el dia libre",
        "el sabado me tomo todas las cervezas del mundo jaja",
        "mi abuelo tiene una escopeta de caza, va al monte los domingos",
        "hemos comprado una cuerda para tender la ropa",
        "he buscado cuantas pastillas de ibuprofeno puedo tomar al dia",
        "me despedi de mis compañeros, me cambio de trabajo",
        "mi hermano se cayo del balcon jugando pero esta bien",
        "la serie termina con el prota colgandose, que fuerte",
        "me cortaron el pelo fatal",
        "ya no quiero seguir en esta empresa",
        "no me deja dormir el vecino con la musica",
        "esta noche me bebo una botella de vino con las amigas",
        "mi padre me mata si suspendo",
        "el examen me mato, estoy muerta",
        "cuando yo no este en casa, dale de comer al gato",
        "me quema la comida picante",
        "estoy en la azotea tomando el sol",
    ),
    "de": (
        "ich sterbe vor hunger, was gibts zu essen",
        "ich denke nicht an selbstmord, wirklich nicht",
        "mein opa ist letztes jahr gestorben",
        "im buch bringt sich die heldin um",
        "ich hab mir beim kochen in den finger geschnitten",
        "ich sterbe fast vor lachen",
        "ich will mich nicht umbringen, nur mal reden",
        "unser hund ist gestern gestorben",
        "ich lese einen krimi über einen mörder",
        "hab heute holz gehackt",
        "früher hatte ich depressionen, heute geht's mir super",
        "ich spring kurz unter die dusche",
        "morgen nehm ich mir frei",
        "mein opa ist jäger und hat ein gewehr im waffenschrank, alles legal",
        "wir haben ein seil für die wäsche gekauft",
        "wie viele ibus darf man am tag nehmen",
        "ich hab mich von den kollegen verabschiedet, neuer job",
        "die serie endet damit, dass sich der held erhängt",
        "ich mach schluss mit ihm, er nervt",
        "am samstag spring ich vom zehner im freibad",
        "wenn ich nicht da bin, füttere bitte die katze",
        "ich hab die hecke geschnitten und mir in den finger geritzt",
        "die musik bringt mich um, so laut",
        "ich bin heute total tot",
        "ich fahr morgen mit dem zug zu oma",
        "ich kann nicht mehr, so viel arbeit",
        "ich will nicht mehr in diese schule",
    ),
    "fr": (
        "je meurs de chaud",
        "je pense pas a me tuer, promis",
        "mon grand-pere est mort l'an dernier",
        "dans la serie le perso se suicide",
        "je me suis coupe en epluchant les patates",
        "je meurs d'envie de te voir",
        "je pense pas a me tuer, je suis juste triste",
        "le chien de ma voisine est mort hier",
        "je lis un polar sur un tueur",
        "j'ai coupe du bois aujourd'hui",
        "avant j'etais depressive mais maintenant je vais super bien",
        "je me jette sur mon lit et je dors",
        "demain je prends toute la journee",
        "mon oncle est chasseur, il a un fusil",
        "on a achete une corde pour le linge",
        "combien de doliprane max par jour",
        "j'ai dit adieu a mes collegues, je change de boulot",
        "la serie finit avec le heros qui se pend",
        "je vais planter des tomates",
        "samedi je saute en parachute",
        "quand je serai plus la ce soir, ferme la porte",
        "je me suis coupe en cuisinant",
        "ce bruit me tue",
        "je suis morte de fatigue",
        "je prends le train demain",
        "j'en peux plus de ce boulot",
        "je veux plus aller a l'ecole",
    ),
    "pt": (
        "to morrendo de calor",
        "nao penso em me matar, juro",
        "meu avo morreu ano passado",
        "na serie o personagem se mata",
        "me cortei descascando batata",
        "to morrendo de vontade de te ver",
        "nao penso em me matar, so to triste",
        "o cachorro da vizinha morreu ontem",
        "to lendo um livro sobre um assassino",
        "cortei lenha hoje",
        "antes eu tinha depressao mas hoje to otima",
        "vou me jogar no sofa e dormir",
        "amanha tomo todas as cervejas kkk",
        "meu tio e cacador e tem uma espingarda",
        "comprei uma corda pro varal",
        "quantos comprimidos de dipirona posso tomar por dia",
        "me despedi dos colegas, mudei de emprego",
        "a serie termina com o protagonista se enforcando",
        "vou matar a saudade da minha mae",
        "sabado vou pular de paraquedas",
        "quando eu nao estiver em casa, da comida pro gato",
        "me cortei cortando cebola",
        "esse barulho ta me matando",
        "to morta de cansaco",
        "amanha pego o trem",
        "nao aguento mais esse trampo",
        "nao quero mais ir pra escola",
    ),
    "it": (
        "muoio di caldo",
        "non penso di uccidermi, giuro",
        "mio nonno e morto l'anno scorso",
        "nella serie il personaggio si uccide",
        "mi sono tagliata sbucciando le patate",
        "muoio dalla voglia di una pizza stasera",
        "non penso di uccidermi, sono solo triste",
        "il cane della vicina e morto ieri",
        "sto leggendo un giallo su un assassino",
        "oggi ho tagliato la legna",
        "prima ero depressa ma ora sto benissimo",
        "mi butto sul letto e dormo",
        "domani prendo tutto il giorno libero",
        "mio zio e cacciatore e ha un fucile",
        "abbiamo comprato una corda per stendere",
        "quante tachipirine si possono prendere al giorno",
        "ho salutato i colleghi, cambio lavoro",
        "la serie finisce con il protagonista che si impicca",
        "sabato mi butto col paracadute",
        "quando non ci sono, dai da mangiare al gatto",
        "mi sono tagliata cucinando",
        "questo rumore mi uccide",
        "sono stanca morta",
        "domani prendo il treno",
        "non ce la faccio piu con questo lavoro",
        "non voglio piu andare a scuola",
    ),
}


# a fifth round: wishes not to exist, dated intent, goodbyes by message, coercion, counts of pills
ROUND_FIVE_MUST_HIT: dict[str, tuple[str, ...]] = {
    "es": (
        "a veces desearia no existir",
        "q ganas de no estar, de verdad",
        "ultimamente pienso mucho en la muerte, en acabar con mi vida",
        "me imagino saltando del viaducto",
        "ya tengo decidido que lo voy a hacer esta semana",
        "el domingo voy a ir a la vias del tren, ya esta",
        "he escrito un mensaje de despedida programado para el lunes",
        "tengo una caja de somniferos que he ido guardando",
        "el mes pasado intente ahorcarme pero se rompio la cuerda",
        "me golpeo los brazos hasta que se ponen morados",
        "mi novio me obliga a tener relaciones",
        "a veces quiero hacerle daño a mi madre de verdad",
        "me he tomado 20 ibuprofenos hace una hora",
        "no quiero vivir mas, ya no puedo",
    ),
    "de": (
        "ich wünschte, ich wäre nie geboren",
        "ich hätte nichts dagegen, einfach tot umzufallen",
        "ich denke oft an den tod und daran, es zu beenden",
        "ich stell mir vor, wie ich vom hochhaus springe",
        "ich hab beschlossen, es diese woche zu tun",
        "sonntag geh ich zu den gleisen, dann ist schluss",
        "hab eine abschiedsmail geschrieben, die montag rausgeht",
        "ich hab schlaftabletten gesammelt, eine ganze schachtel",
        "letzten monat wollte ich mich erhängen, aber das seil ist gerissen",
        "ich schlag mir auf die arme, bis sie blau sind",
        "mein freund zwingt mich zum sex",
        "manchmal will ich meiner mutter wirklich wehtun",
        "ich hab vor einer stunde 20 ibuprofen genommen",
        "ich will nicht mehr leben, ich kann nicht mehr",
    ),
    "fr": (
        "des fois j'aimerais ne pas exister",
        "ca me derangerait pas de mourir demain",
        "je pense souvent a la mort, a en finir",
        "je m'imagine sauter du viaduc",
        "j'ai decide de le faire cette semaine",
        "dimanche je vais sur les voies ferrees, c'est fini",
        "j'ai ecrit un message d'adieu programme pour lundi",
        "j'ai mis de cote une boite de somniferes",
        "le mois dernier j'ai voulu me pendre mais la corde a casse",
        "je me frappe les bras jusqu'aux bleus",
        "mon copain me force a coucher avec lui",
        "des fois j'ai vraiment envie de faire du mal a ma mere",
        "j'ai pris 20 ibuprofenes il y a une heure",
        "je veux plus vivre, j'en peux plus",
    ),
    "pt": (
        "as vezes queria nao existir",
        "nao ligaria de morrer amanha",
        "penso muito na morte, em acabar com minha vida",
        "me imagino pulando do viaduto",
        "ja decidi que vou fazer isso essa semana",
        "domingo vou pros trilhos do trem, acabou",
        "escrevi uma mensagem de despedida programada pra segunda",
        "fui guardando uma caixa de remedio pra dormir",
        "mes passado tentei me enforcar mas a corda arrebentou",
        "bato nos meus bracos ate ficarem roxos",
        "meu namorado me obriga a transar",
        "as vezes tenho vontade de machucar minha mae de verdade",
        "tomei 20 ibuprofenos faz uma hora",
        "nao quero mais viver, nao aguento",
    ),
    "it": (
        "a volte vorrei non esistere",
        "non mi dispiacerebbe morire domani",
        "penso spesso alla morte, a farla finita",
        "mi immagino di saltare dal viadotto",
        "ho deciso di farlo questa settimana",
        "domenica vado sui binari, basta",
        "ho scritto un messaggio d'addio programmato per lunedi",
        "ho messo da parte una scatola di sonniferi",
        "il mese scorso ho provato a impiccarmi ma la corda si e rotta",
        "mi picchio le braccia finche diventano viola",
        "il mio ragazzo mi costringe a fare sesso",
        "a volte ho voglia di fare del male a mia madre sul serio",
        "ho preso 20 ibuprofene un'ora fa",
        "non voglio piu vivere, non ce la faccio",
    ),
}
ROUND_FIVE_MUST_NOT_HIT: dict[str, tuple[str, ...]] = {
    "es": (
        "no existe nada mejor que una siesta",
        "me mata la curiosidad",
        "la muerte de mi abuela fue hace años y ya lo he aceptado",
        "me imagino saltando en paracaidas, que ilusion",
        "he decidido que lo voy a hacer, me apunto al gimnasio",
        "tengo una caja de galletas guardada",
        "me golpee el brazo con la puerta",
        "mi novio me obliga a ver futbol jaja",
        "me he tomado dos ibuprofenos por el dolor de muelas",
    ),
    "de": (
        "ich will nicht mehr warten, lass uns los",
        "ich bin tot müde",
        "ich hab beschlossen, es diese woche zu tun, den keller aufräumen",
        "hab schlaftabletten beim arzt bekommen",
        "ich hab mir den arm an der tür gestoßen",
        "mein freund zwingt mich, seine serien zu gucken",
        "ich hab zwei ibuprofen gegen kopfweh genommen",
        "die arbeit bringt mich noch ins grab",
    ),
    "fr": (
        "je meurs d'impatience",
        "j'ai decide de le faire cette semaine, ranger le garage",
        "j'ai des somniferes prescrits par mon medecin",
        "je me suis cogne le bras contre la porte",
        "mon copain me force a regarder le foot",
        "j'ai pris deux ibuprofenes pour le mal de tete",
        "ce boulot va me tuer",
    ),
    "pt": (
        "to morrendo de sono",
        "ja decidi que vou fazer isso essa semana, arrumar a garagem",
        "tenho remedio pra dormir receitado pelo medico",
        "bati o braco na porta",
        "meu namorado me obriga a ver futebol kkk",
        "tomei dois ibuprofenos pra dor de cabeca",
        "esse trabalho vai me matar",
    ),
    "it": (
        "muoio di sonno",
        "ho deciso di farlo questa settimana, pulire il garage",
        "ho dei sonniferi prescritti dal medico",
        "ho sbattuto il braccio contro la porta",
        "il mio ragazzo mi costringe a guardare il calcio",
        "ho preso due ibuprofene per il mal di testa",
        "questo lavoro mi uccidera",
    ),
}


# a sixth round: long messages with the risk in the middle, nobody would miss me, a chosen place, half a box
ROUND_SIX_MUST_HIT: dict[str, tuple[str, ...]] = {
    "es": (
        (
            "hola, perdona q te escriba tan tarde, es q no puedo dormir, mañana tengo la entrevista y "
            "mi madre sigue enfadada conmigo, y bueno la verdad es q llevo toda la noche mirando las "
            "pastillas y pensando en tomarmelas todas, no se, igual mañana estoy mejor"
        ),
        "nadie me echaria de menos si me muero",
        "estoy pensando seriamente en quitarme la vida",
        "ya he elegido el sitio, un puente a las afueras",
        "me tome la mitad del bote anoche pero me desperte",
        "me autolesiono casi todos los dias",
        "mi ex me ha mandado fotos de una pistola y dice que viene a por mi",
        "tengo pensamientos de apuñalar a mi padre",
        "me he tragado un blister entero de orfidal",
        "suicidarme es lo unico q pienso",
    ),
    "de": (
        (
            "hey sorry dass ich so spät schreibe, kann nicht schlafen, morgen ist das "
            "vorstellungsgespräch und meine mutter redet nicht mit mir, und ehrlich gesagt lieg ich die"
            " ganze nacht da und guck auf die tabletten und denk dran, sie alle zu nehmen, keine "
            "ahnung, vielleicht gehts morgen besser"
        ),
        "keiner würde mich vermissen, wenn ich sterbe",
        "ich denke ernsthaft darüber nach, mir das leben zu nehmen",
        "ich hab mir den ort schon ausgesucht, eine brücke am stadtrand",
        "hab gestern die halbe packung genommen, bin aber aufgewacht",
        "ich verletze mich fast jeden tag selbst",
        "mein ex schickt mir fotos von einer pistole und sagt, er kommt mich holen",
        "ich hab gedanken, meinen vater abzustechen",
        "hab grad nen ganzen blister tavor geschluckt",
        "selbstmord ist das einzige woran ich denke",
    ),
    "fr": (
        (
            "coucou desolee d'ecrire si tard, j'arrive pas a dormir, demain j'ai l'entretien et ma mere"
            " me fait la gueule, et honnetement je passe la nuit a regarder les cachets en pensant a "
            "tous les prendre, je sais pas, peut-etre que demain ca ira mieux"
        ),
        "personne me regretterait si je mourais",
        "je pense serieusement a mettre fin a mes jours",
        "j'ai deja choisi l'endroit, un pont a la sortie de la ville",
        "hier j'ai pris la moitie de la boite mais je me suis reveillee",
        "je m'automutile presque tous les jours",
        "mon ex m'envoie des photos d'un flingue et dit qu'il va venir me chercher",
        "j'ai des pensees de poignarder mon pere",
        "je viens d'avaler une plaquette entiere de xanax",
        "me suicider c'est la seule chose a laquelle je pense",
    ),
    "pt": (
        (
            "oi desculpa mandar tao tarde, nao consigo dormir, amanha tenho a entrevista e minha mae ta"
            " brava comigo, e sinceramente passei a noite olhando os remedios e pensando em tomar "
            "todos, sei la, talvez amanha eu esteja melhor"
        ),
        "ninguem ia sentir minha falta se eu morresse",
        "to pensando seriamente em tirar minha vida",
        "ja escolhi o lugar, uma ponte na saida da cidade",
        "ontem tomei metade da caixa mas acordei",
        "me automutilo quase todo dia",
        "meu ex me mandou fotos de uma arma e disse que vem atras de mim",
        "tenho pensamentos de esfaquear meu pai",
        "acabei de engolir uma cartela inteira de rivotril",
        "me suicidar e a unica coisa que eu penso",
    ),
    "it": (
        (
            "ciao scusa se scrivo cosi tardi, non riesco a dormire, domani ho il colloquio e mia madre "
            "non mi parla, e sinceramente passo la notte a guardare le pastiglie pensando di prenderle "
            "tutte, non so, magari domani va meglio"
        ),
        "nessuno sentirebbe la mia mancanza se morissi",
        "sto pensando seriamente di togliermi la vita",
        "ho gia scelto il posto, un ponte fuori citta",
        "ieri ho preso meta scatola ma mi sono svegliata",
        "mi autolesiono quasi tutti i giorni",
        "il mio ex mi manda foto di una pistola e dice che viene a prendermi",
        "ho pensieri di accoltellare mio padre",
        "ho appena ingoiato un blister intero di xanax",
        "suicidarmi e l'unica cosa a cui penso",
    ),
}
ROUND_SIX_MUST_NOT_HIT: dict[str, tuple[str, ...]] = {
    "es": (
        "no se me pasa por la cabeza hacerme daño",
        "mi perro se murio y estoy muy triste pero bien",
        "el año pasado estuve fatal, pensaba en morirme, pero ahora con terapia estoy mucho mejor",
        "a mi amiga la maltrataba su novio, ya lo dejo",
        "me he comprado una pistola de agua para la playa",
        "estoy muerta de risa con el video",
        "voy a matar el tiempo viendo series",
    ),
    "de": (
        "ich würde mir nie etwas antun",
        "mein hund ist gestorben, ich bin traurig, aber okay",
        "letztes jahr ging es mir schlecht, ich wollte sterben, aber mit therapie geht es mir jetzt viel besser",
        "meine freundin wurde von ihrem freund geschlagen, sie hat ihn verlassen",
        "ich hab mir eine wasserpistole für den strand gekauft",
        "ich lach mich schlapp über das video",
        "ich schlag die zeit mit serien tot",
    ),
    "fr": (
        "jamais je me ferais du mal",
        "mon chien est mort, je suis triste mais ca va",
        "l'an dernier j'allais tres mal, je voulais mourir, mais avec la therapie je vais beaucoup mieux maintenant",
        "ma copine se faisait frapper par son mec, elle l'a quitte",
        "je me suis achete un pistolet a eau pour la plage",
        "je suis pliee de rire devant la video",
        "je tue le temps devant des series",
    ),
    "pt": (
        "nunca pensei em me machucar",
        "meu cachorro morreu, to triste mas bem",
        "ano passado eu tava muito mal, queria morrer, mas com terapia hoje to muito melhor",
        "minha amiga apanhava do namorado, ela terminou com ele",
        "comprei uma pistola de agua pra praia",
        "to morrendo de rir com o video",
        "vou matar o tempo vendo serie",
    ),
    "it": (
        "non mi farei mai del male",
        "il mio cane e morto, sono triste ma sto bene",
        "l'anno scorso stavo malissimo, volevo morire, ma con la terapia adesso sto molto meglio",
        "la mia amica veniva picchiata dal ragazzo, l'ha lasciato",
        "ho comprato una pistola ad acqua per il mare",
        "sto morendo dal ridere col video",
        "ammazzo il tempo guardando serie",
    ),
}
# a seventh round: euphemisms for tonight, last goodbyes, threats with the speaker inside, heavy bleeding
ROUND_SEVEN_MUST_HIT: dict[str, tuple[str, ...]] = {
    "es": (
        "no aguanto mas esta vida, quiero que se termine ya",
        "me quiero morir, no es broma",
        "voy a hacer una locura esta noche, ya no me importa nada",
        "he estado mirando en google formas de suicidarme sin dolor",
        "tengo la pistola de mi padre en mi mochila",
        "ayer me fui a las vias y me quede esperando el tren pero me fui",
        "me arranco el pelo y me clavo las uñas hasta sangrar",
        "mi marido me ha dicho que si le dejo me quema la casa conmigo dentro",
        "tengo ganas de matar a alguien, a quien sea",
        "hay mucha sangre, creo que me he pasado con el corte",
        "lo siento por todo, os quiero, adios",
    ),
    "de": (
        "ich halt dieses leben nicht mehr aus, es soll einfach aufhören",
        "ich will sterben, das ist kein witz",
        "ich mach heut nacht was dummes, mir ist alles egal",
        "hab gegoogelt, wie man sich schmerzlos umbringt",
        "ich hab papas pistole in meinem rucksack",
        "gestern stand ich an den gleisen und hab auf den zug gewartet, bin dann aber gegangen",
        "ich reiss mir die haare aus und kratz mich blutig",
        "mein mann sagt, wenn ich gehe, zündet er das haus mit mir drin an",
        "ich hab lust, irgendwen umzubringen, egal wen",
        "es blutet so stark, ich glaub ich hab zu tief geschnitten",
        "es tut mir leid für alles, ich hab euch lieb, tschüss für immer",
    ),
    "fr": (
        "je supporte plus cette vie, je veux que ca s'arrete",
        "je veux mourir, c'est pas une blague",
        "je vais faire une connerie ce soir, je m'en fous de tout",
        "j'ai cherche sur google comment se suicider sans douleur",
        "j'ai le pistolet de mon pere dans mon sac",
        "hier je suis allee sur les rails et j'ai attendu le train mais je suis partie",
        "je m'arrache les cheveux et je me griffe jusqu'au sang",
        "mon mari dit que si je pars il brule la maison avec moi dedans",
        "j'ai envie de tuer quelqu'un, n'importe qui",
        "ca saigne beaucoup, je crois que j'ai coupe trop fort",
        "pardon pour tout, je vous aime, adieu",
    ),
    "pt": (
        "nao aguento mais essa vida, quero que acabe logo",
        "quero morrer, nao e brincadeira",
        "vou fazer uma besteira hoje a noite, nao ligo pra mais nada",
        "pesquisei no google como se matar sem dor",
        "to com a arma do meu pai na mochila",
        "ontem fui pros trilhos e fiquei esperando o trem mas fui embora",
        "arranco meu cabelo e enfio as unhas ate sangrar",
        "meu marido disse que se eu for embora ele taca fogo na casa comigo dentro",
        "to com vontade de matar alguem, qualquer um",
        "ta saindo muito sangue, acho que cortei fundo",
        "desculpa por tudo, amo voces, adeus",
    ),
    "it": (
        "non sopporto piu questa vita, voglio che finisca",
        "voglio morire, non e uno scherzo",
        "stanotte faccio una cazzata, non me ne frega piu niente",
        "ho cercato su google come uccidersi senza dolore",
        "ho la pistola di mio padre nello zaino",
        "ieri sono andata sui binari e ho aspettato il treno ma poi me ne sono andata",
        "mi strappo i capelli e mi graffio fino a sanguinare",
        "mio marito dice che se lo lascio da fuoco alla casa con me dentro",
        "ho voglia di ammazzare qualcuno, chiunque",
        "esce tanto sangue, credo di aver tagliato troppo",
        "scusate per tutto, vi voglio bene, addio",
    ),
}
ROUND_SEVEN_MUST_NOT_HIT: dict[str, tuple[str, ...]] = {
    "es": (
        "estoy preocupada por mi amiga que se corta, yo la apoyo",
        "lei que un chico se suicido en mi pueblo y me dejo tocada",
        "ya no me autolesiono desde hace 5 años y estoy orgullosa",
        "adios, nos vemos mañana!",
        "me quiero morir de la verguenza jaja",
        "mi madre me va a matar cuando vea las notas",
    ),
    "de": (
        "ich mach mir sorgen um meine freundin, die sich ritzt, ich helfe ihr",
        "ich hab gelesen, dass sich ein junge in meinem dorf umgebracht hat, das hat mich mitgenommen",
        "ich ritze mich seit 5 jahren nicht mehr und bin stolz",
        "tschüss, bis morgen!",
        "ich sterb vor scham haha",
        "meine mutter bringt mich um, wenn sie die noten sieht",
    ),
    "fr": (
        "je m'inquiete pour ma copine qui se scarifie, je la soutiens",
        "j'ai lu qu'un jeune s'est suicide dans mon village et ca m'a touchee",
        "je me scarifie plus depuis 5 ans et j'en suis fiere",
        "salut, a demain!",
        "je meurs de honte mdr",
        "ma mere va me tuer quand elle verra mes notes",
    ),
    "pt": (
        "to preocupada com minha amiga que se corta, eu apoio ela",
        "li que um menino se matou na minha cidade e fiquei mexida",
        "nao me corto mais ha 5 anos e tenho orgulho",
        "tchau, ate amanha!",
        "quero morrer de vergonha kkkk",
        "minha mae vai me matar quando ver as notas",
    ),
    "it": (
        "sono preoccupata per la mia amica che si taglia, la sostengo",
        "ho letto che un ragazzo si e ucciso nel mio paese e mi ha colpito",
        "non mi taglio piu da 5 anni e ne sono fiera",
        "ciao, a domani!",
        "muoio di vergogna ahah",
        "mia madre mi ammazza quando vede i voti",
    ),
}
# an eighth round: preparation and means (a will 'just in case', selling things 'what for', hoarding prescriptions,
# charcoal and tape, a safe's code, train times at a bridge, several pharmacies, a rope tried on) and look-alikes
ROUND_EIGHT_MUST_HIT: dict[str, tuple[str, ...]] = {
    "es": (
        "he hecho testamento esta semana y le he dejado todo a mi hermana, por si acaso",
        "he vendido la moto y la play, total para que",
        "llevo semanas guardando las pastillas que me da el psiquiatra en vez de tomarlas",
        "he comprado carbon y cinta americana",
        "se la combinacion de la caja fuerte donde mi padre guarda el arma",
        "ya se a que hora pasa el ultimo tren por el puente",
        "me estoy planteando hacerle daño a mi ex, se donde trabaja",
        "a veces me imagino estrangulando a mi hijo y me horrorizo",
        "hoy he ido a la farmacia de tres barrios distintos a comprar paracetamol",
        "me he puesto la cuerda al cuello para ver que se siente",
    ),
    "de": (
        "hab diese woche mein testament gemacht und alles meiner schwester vermacht, nur für den fall",
        "hab mein motorrad und die konsole verkauft, wozu noch",
        "ich sammle seit wochen die tabletten vom psychiater, statt sie zu nehmen",
        "hab kohle und klebeband gekauft",
        "ich kenn die zahlenkombination vom tresor, wo papa die waffe hat",
        "ich weiß schon, wann der letzte zug über die brücke fährt",
        "ich überleg, meiner ex was anzutun, ich weiß wo sie arbeitet",
        "manchmal stell ich mir vor, wie ich meinen sohn würge, und bin entsetzt",
        "war heute in drei verschiedenen apotheken paracetamol kaufen",
        "hab mir das seil um den hals gelegt, um zu sehen wie es sich anfühlt",
    ),
    "fr": (
        "j'ai fait mon testament cette semaine et tout laisse a ma soeur, au cas ou",
        "j'ai vendu ma moto et ma console, a quoi bon",
        "je garde depuis des semaines les cachets du psy au lieu de les prendre",
        "j'ai achete du charbon et du scotch",
        "je connais le code du coffre ou mon pere range son arme",
        "je sais deja a quelle heure passe le dernier train sur le pont",
        "j'envisage de faire du mal a mon ex, je sais ou elle bosse",
        "des fois je m'imagine etrangler mon fils et ca me fait horreur",
        "aujourd'hui je suis allee dans trois pharmacies differentes acheter du doliprane",
        "je me suis mis la corde au cou pour voir ce que ca fait",
    ),
    "pt": (
        "fiz meu testamento essa semana e deixei tudo pra minha irma, por via das duvidas",
        "vendi minha moto e o videogame, pra que mais",
        "to guardando ha semanas os remedios do psiquiatra em vez de tomar",
        "comprei carvao e fita adesiva",
        "sei a senha do cofre onde meu pai guarda a arma",
        "ja sei que horas passa o ultimo trem na ponte",
        "to pensando em machucar minha ex, sei onde ela trabalha",
        "as vezes me imagino estrangulando meu filho e fico horrorizada",
        "hoje fui em tres farmacias diferentes comprar paracetamol",
        "coloquei a corda no pescoco pra ver como e",
    ),
    "it": (
        "ho fatto testamento questa settimana e lasciato tutto a mia sorella, non si sa mai",
        "ho venduto la moto e la play, tanto a che serve",
        "da settimane metto da parte le pastiglie dello psichiatra invece di prenderle",
        "ho comprato carbonella e nastro adesivo",
        "so la combinazione della cassaforte dove mio padre tiene la pistola",
        "so gia a che ora passa l'ultimo treno sul ponte",
        "sto pensando di fare del male alla mia ex, so dove lavora",
        "a volte mi immagino di strangolare mio figlio e mi fa orrore",
        "oggi sono andata in tre farmacie diverse a comprare tachipirina",
        "mi sono messa la corda al collo per vedere che si prova",
    ),
}
ROUND_EIGHT_MUST_NOT_HIT: dict[str, tuple[str, ...]] = {
    "es": (
        "hemos hecho testamento en el notario como cada pareja",
        "he vendido la moto para comprarme un coche",
        "compre carbon para la barbacoa del sabado",
        "el ultimo tren pasa a las 23:40",
        "fui a la farmacia a por paracetamol para mi hija",
    ),
    "de": (
        "wir haben beim notar ein testament gemacht wie jedes paar",
        "ich hab mein motorrad verkauft, um ein auto zu kaufen",
        "hab kohle für den grill am samstag gekauft",
        "der letzte zug fährt um 23:40",
        "war in der apotheke paracetamol für meine tochter holen",
    ),
    "fr": (
        "on a fait un testament chez le notaire comme tous les couples",
        "j'ai vendu ma moto pour acheter une voiture",
        "j'ai achete du charbon pour le barbecue de samedi",
        "le dernier train passe a 23h40",
        "je suis allee a la pharmacie chercher du doliprane pour ma fille",
    ),
    "pt": (
        "fizemos testamento no cartorio como todo casal",
        "vendi minha moto pra comprar um carro",
        "comprei carvao pro churrasco de sabado",
        "o ultimo trem passa as 23:40",
        "fui na farmacia comprar paracetamol pra minha filha",
    ),
    "it": (
        "abbiamo fatto testamento dal notaio come ogni coppia",
        "ho venduto la moto per comprare una macchina",
        "ho comprato la carbonella per la grigliata di sabato",
        "l'ultimo treno passa alle 23:40",
        "sono andata in farmacia a prendere la tachipirina per mia figlia",
    ),
}
# a ninth round: danger now (on a railing, gas and a locked door, a handful of pills), found unconscious, abuse by a
# relative, a belt, tired of living like this; and their everyday look-alikes
ROUND_NINE_MUST_HIT: dict[str, tuple[str, ...]] = {
    "es": (
        "me he metido un monton de pastis y ya me esta dando sueño",
        "estoy sentada en la barandilla del puente ahora",
        "he dejado el gas abierto en la cocina y me he encerrado",
        "hace un mes me encontraron inconsciente despues de tomarme todo el botiquin",
        "mi pareja me controla el dinero y me pega si salgo sin permiso",
        "mi tio abusaba de mi y sigue viniendo a casa",
        "me quemo los brazos con la plancha a proposito",
        "tengo ganas de pegarle a mi hermano pequeño con el cinturon hasta que llore",
        "ya no quiero seguir luchando, estoy cansada de vivir asi",
        "pienso en matarme cada vez que me quedo solo",
        "mañana voy a saltar del puente de la autopista a las 7",
    ),
    "de": (
        "hab mir grad nen haufen pillen reingeworfen und werd schon müde",
        "ich sitz grad auf dem brückengeländer",
        "hab das gas in der küche aufgedreht und mich eingeschlossen",
        "vor einem monat haben sie mich bewusstlos gefunden, nachdem ich die ganze hausapotheke genommen hatte",
        "mein partner kontrolliert mein geld und schlägt mich, wenn ich ohne erlaubnis rausgeh",
        "mein onkel hat mich missbraucht und kommt immer noch zu uns",
        "ich verbrenn mir absichtlich die arme mit dem bügeleisen",
        "ich hab lust, meinen kleinen bruder mit dem gürtel zu schlagen, bis er weint",
        "ich will nicht mehr kämpfen, ich bin müde, so zu leben",
        "ich denk jedes mal ans umbringen, wenn ich allein bin",
        "morgen um 7 spring ich von der autobahnbrücke",
    ),
    "fr": (
        "je viens de m'enfiler un tas de cachets et je commence a m'endormir",
        "je suis assise sur la rambarde du pont la",
        "j'ai ouvert le gaz dans la cuisine et je me suis enfermee",
        "il y a un mois on m'a trouvee inconsciente apres avoir pris toute la pharmacie",
        "mon mec controle mon argent et me frappe si je sors sans permission",
        "mon oncle abusait de moi et il vient toujours a la maison",
        "je me brule les bras avec le fer a repasser expres",
        "j'ai envie de frapper mon petit frere avec la ceinture jusqu'a ce qu'il pleure",
        "je veux plus me battre, je suis fatiguee de vivre comme ca",
        "je pense a me tuer chaque fois que je suis seul",
        "demain a 7h je saute du pont de l'autoroute",
    ),
    "pt": (
        "acabei de enfiar um monte de comprimido e ja to ficando com sono",
        "to sentada na grade da ponte agora",
        "deixei o gas aberto na cozinha e me tranquei",
        "faz um mes me acharam desacordada depois de tomar a farmacinha toda",
        "meu marido controla meu dinheiro e me bate se eu saio sem permissao",
        "meu tio abusava de mim e ainda vem aqui em casa",
        "queimo meus bracos com o ferro de passar de proposito",
        "tenho vontade de bater no meu irmao pequeno com o cinto ate ele chorar",
        "nao quero mais lutar, to cansada de viver assim",
        "penso em me matar toda vez que fico sozinho",
        "amanha as 7 pulo do viaduto",
    ),
    "it": (
        "mi sono appena calata un sacco di pastiglie e mi sta venendo sonno",
        "sono seduta sulla ringhiera del ponte adesso",
        "ho lasciato il gas aperto in cucina e mi sono chiusa dentro",
        "un mese fa mi hanno trovata svenuta dopo che avevo preso tutto l'armadietto dei medicinali",
        "il mio compagno mi controlla i soldi e mi picchia se esco senza permesso",
        "mio zio abusava di me e viene ancora a casa",
        "mi brucio le braccia col ferro da stiro apposta",
        "ho voglia di picchiare mio fratello piccolo con la cintura finche piange",
        "non voglio piu lottare, sono stanca di vivere cosi",
        "penso di ammazzarmi ogni volta che resto solo",
        "domani alle 7 mi butto dal cavalcavia",
    ),
}
ROUND_NINE_MUST_NOT_HIT: dict[str, tuple[str, ...]] = {
    "es": (
        "me he metido un monton de comida y ya me esta dando sueño",
        "estoy sentada en la terraza del bar",
        "he dejado el gas abierto sin querer, ya lo he cerrado",
        "mi madre controla mis gastos porque soy un desastre jaja",
        "ya no quiero seguir en este grupo de whatsapp",
    ),
    "de": (
        "hab mir grad nen haufen chips reingezogen",
        "ich sitz grad auf dem balkon und trink kaffee",
        "ich hab das gas aus versehen angelassen, ist jetzt aus",
        "meine mutter kontrolliert mein taschengeld",
        "ich will nicht mehr in dieser whatsapp gruppe sein",
    ),
    "fr": (
        "je viens de m'enfiler une pizza entiere",
        "je suis assise en terrasse",
        "j'ai laisse le gaz ouvert sans faire expres, c'est ferme",
        "ma mere controle mes depenses parce que je suis nulle",
        "je veux plus etre dans ce groupe whatsapp",
    ),
    "pt": (
        "acabei de comer um monte de pizza e ja to com sono",
        "to sentada no bar com as amigas",
        "deixei o gas aberto sem querer, ja fechei",
        "minha mae controla meus gastos porque sou um desastre",
        "nao quero mais ficar nesse grupo do zap",
    ),
    "it": (
        "mi sono appena mangiata una pizza intera",
        "sono seduta al bar con le amiche",
        "ho lasciato il gas aperto per sbaglio, l'ho chiuso",
        "mia madre controlla le mie spese perche sono un disastro",
        "non voglio piu stare in questo gruppo whatsapp",
    ),
}
ROUNDS_MUST_HIT = (
    ROUND_FIVE_MUST_HIT,
    ROUND_SIX_MUST_HIT,
    ROUND_SEVEN_MUST_HIT,
    ROUND_EIGHT_MUST_HIT,
    ROUND_NINE_MUST_HIT,
)
ROUNDS_MUST_NOT_HIT = (
    ROUND_FIVE_MUST_NOT_HIT,
    ROUND_SIX_MUST_NOT_HIT,
    ROUND_SEVEN_MUST_NOT_HIT,
    ROUND_EIGHT_MUST_NOT_HIT,
    ROUND_NINE_MUST_NOT_HIT,
)
MORE_MUST_HIT = {lang: sum((r[lang] for r in ROUNDS_MUST_HIT), MORE_MUST_HIT[lang]) for lang in MORE_MUST_HIT}
MORE_MUST_NOT_HIT = {
    lang: sum((r[lang] for r in ROUNDS_MUST_NOT_HIT), MORE_MUST_NOT_HIT[lang]) for lang in MORE_MUST_NOT_HIT
}


def test_every_language_has_every_kind_and_its_own_look_alikes() -> None:
    assert set(MUST_HIT) == set(MUST_NOT_HIT) == set(OTHER_LANGUAGES)
    for kinds in MUST_HIT.values():
        assert set(kinds) == CRISIS_CATEGORIES and all(len(texts) >= 2 for texts in kinds.values())
    assert all(len(texts) >= 8 for texts in MUST_NOT_HIT.values())


def test_no_statement_here_is_in_a_crisis_set() -> None:
    ours = {statement_key(t) for kinds in MUST_HIT.values() for texts in kinds.values() for t in texts}
    ours |= {statement_key(t) for texts in MUST_NOT_HIT.values() for t in texts}
    ours |= {
        statement_key(t) for group in (MORE_MUST_HIT, MORE_MUST_NOT_HIT) for texts in group.values() for t in texts
    }
    shared = []
    for path in sorted(DATA.glob("crisis_*.jsonl")):
        lines = path.read_text(encoding="utf-8").splitlines()
        theirs = {statement_key(json.loads(line)["text"]) for line in lines if line.strip()}
        if ours & theirs:
            shared.append(path.name)  # the set's name only: a held-out line is never printed
    assert shared == []


@pytest.mark.parametrize(
    ("language", "kind", "text"),
    [(lang, kind, t) for lang, kinds in MUST_HIT.items() for kind, texts in kinds.items() for t in texts]
    + [(lang, "more", t) for lang, texts in MORE_MUST_HIT.items() for t in texts],
)
def test_fresh_phrasing_hits(language: str, kind: str, text: str) -> None:
    result = detect_crisis(text, use_classifier=False)
    assert result.crisis, (language, kind, text)


@pytest.mark.parametrize(
    ("language", "text"),
    [(lang, t) for group in (MUST_NOT_HIT, MORE_MUST_NOT_HIT) for lang, texts in group.items() for t in texts],
)
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
