"""The English crisis rules of the sixth pass (issue 13), pattern by pattern: each pattern family gets phrasings
that must hit and everyday look-alikes that must not, all written for this file and in no crisis set, so a rule
is held to the pattern it states and not to the dev lines it was written from. Rules only (no classifier): these
check the deterministic floor, which also screens simulated patients.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from crisis_sets import statement_key

from cbtcompare.safety import detect_crisis

DATA = Path(__file__).parent / "data"

MUST_HIT = {
    "farewell in other words": [
        "drafted goodbye emails to my team and my brother, they send on monday",
        "i've recorded a last voice note for my mum",
        "been doing quiet goodbyes all week, nobody has noticed",
        "saying goodbye to my friends without them knowing it's goodbye",
        "left a note for my kids saying sorry to my family",
        "wrote notes to everyone i love and put them under my pillow",
        "picked the songs for my funeral playlist tonight",
        "envelope on the shelf is marked open after",
        "whoever finds me, please look after the cat",
        "how soon would anyone find me if i went into the forest",
        "binned everything so there's nothing for my sister to sort out",
        "put my books in piles labelled with people's names",
        "i wrote down who gets my records and my bike",
        "sold my camera and gave the money to my nephew",
        "left my guitar to my little sister in a letter",
        "wrote letters to my parents and my best mate, sealed them and hid them in my desk",
        "recorded a message for each of my nephews in case i'm not around",
        "checked if my life insurance pays out if it's suicide",
        "cleared my browser history so nobody sees the searches about overdoses",
        "gave my watch to my dad and cancelled my phone contract the same day",
    ],
    "handing on for good": [
        "found my parrot a new home, not because of a move or anything",
        "rehomed the guinea pigs and told nobody why",
        "asked my neighbour to keep my cat, she doesn't know i mean forever",
        "my flatmate thinks i'm going away for a bit. i'm not",
        "won't be needing my winter coat after this week",
        "no point booking the dentist, i won't be around for it",
    ],
    "research of doses, heights and timings": [
        "which floor of the car park is high enough to be fatal",
        "looking up which tablets hurt least at the end",
        "how many of her sleeping pills would it take",
        "worked out the dose that would do it",
        "did a trial run up to the roof of the multistorey last night",
        "practised with my belt on the door handle",
        "i know when my parents are out on saturdays, 10 till 4, that's my window",
        "been timing the freight trains at the crossing",
    ],
    "access to means": [
        "i stopped taking my antidepressants and kept every one of them",
        "held back my dad's morphine patches when he went into the hospice",
        "bought codeine at three different chemists this morning",
        "i keep picking up another pack of paracetamol each week",
        "my stash is in a shoebox, mostly painkillers and old sleeping tablets",
        "got some tablets off a mate and i'm keeping them for later",
        "there's a blade hidden in my makeup bag",
        "my dad's shotgun is in the cupboard and i've got the key",
        "nobody counts the pills in mum's cupboard",
        "the tablets are right there and with how i've been feeling that scares me",
        "i'm frightened of what i'll do with them tonight",
        "there's a hook on the bedroom door and it's all i think about",
        "i check the pills are still in the drawer every night",
        "my gran's medicines are in the kitchen, i counted them",
        "the pharmacist believed me when i said i'd lost them. i didn't lose them",
        "i have charcoal in the car and a closed garage",
        "put the rope under my bed",
        "the bridge on the ring road has no barrier, i went up to check",
        "i walk to the cliffs at night to look over the edge",
        "stopped taking them and put them aside instead",
        "bought paracetamol in two shops so they wouldn't ask",
    ],
    "plans with a method and a time": [
        "i'm going to use dad's rope in the shed on thursday",
        "i'll take all of my pills once the house is empty",
        "booking a motel and taking the tablets there",
        "the plan is the viaduct, next friday, early",
        "saturday, the railway, my brother's belt",
        "when everyone's at the match on sunday i'll run the car in the garage",
        "i'll walk onto the tracks tomorrow",
        "take the lot tonight, that's the plan",
        "i'm going up to the roof at work to jump",
        "waiting till mum leaves and then take her pills",
        "i know how and when",
        "i've chosen the date, it'll be the last one",
        "i've set a date for ending it",
        "the deadline is my birthday and the rope is ready",
        "settled on the river, in november",
        "the plan hasn't changed, the bridge on sunday",
        "i'll drive to the coast and not brake at the bend",
    ],
    "intent with a resolve or a date": [
        "i'm ending it at the weekend",
        "i've decided, i'll be gone by spring",
        "made up my mind that i'm going to die this year",
        "this is my last christmas alive",
        "when my grandad dies i go",
        "i'm not staying alive past the summer",
        "if they fire me i won't survive it, i'll make sure",
        "i won't be alive for the next exam season",
        "i'm done living",
    ],
    "a past and a present risk": [
        "i tried years ago and i've been thinking about it again",
        "i tried once at uni and the thoughts are back",
        "i used to cut, stopped for two years, and i cut again last night",
        "years ago i took an overdose and lately i've been saving pills again",
        "i used to cut in school. i'm 30 now and not okay, i cut again yesterday",
        "spent years wanting to die and now i'm planning it again",
        "i was once suicidal, i got help, but this week the thoughts are back",
        "6 years since my last attempt and i'm thinking about it again",
        "i used to be suicidal, now i'm a mess and i want to die",
        "ten years ago today i tried to end my life and tonight i want to try again",
        "i overdosed at 19 and i'm doing well but i've been saving my pills again",
        "two weeks since i last cut myself, i'm proud of myself",
        "a week clean from self-harm and i'm okay, i guess",
    ],
    "acute danger": [
        "i'm in the river now, it's so cold",
        "injected the whole pen of insulin a minute ago",
        "swallowed the lot, there's nobody home",
        "engine's running and the hose is in the window",
        "sitting next to the tracks waiting for the next train",
        "driving on the motorway and about to swerve",
        "i'm on the railing, 8 floors up",
        "the rope is up and i'm on the chair",
        "it won't stop bleeding and i don't want anyone to come",
        "the tablets are kicking in, i can't feel my legs",
    ],
    "attempts": [
        "attempted three times this year",
        "my second attempt was in april",
        "sat on the bridge for two hours on friday",
        "a bus driver talked me down off the bridge",
        "had the tablets in my hand when my brother came in",
        "they pumped my stomach last month",
        "climbed back over the railing on the car park roof",
    ],
    "ideation": [
        "been seriously considering suicide lately",
        "suicide seems like the only way out for me",
        "can't trust myself not to hurt myself tonight",
        "a voice keeps telling me to kill myself",
        "praying i don't wake up after the operation",
        "honestly hoping i don't wake up tomorrow morning",
        "i hope this illness takes me",
        "i'd be relieved if i died",
        "thinking about electrocuting myself",
        "i wonder whether my sleeping tablets would be enough",
        "i stare at the tracks and think about it",
    ],
    "self-injury": [
        "scratched through my skin with a pen lid",
        "used the lighter on my arm last night",
        "cutting is the only thing that helps me cope",
        "my legs are covered in fresh cuts",
        "i burned my wrist and told everyone it was an accident",
        "banged my head against the door until it hurt",
        "i put a cigarette out on my hand",
        "broke a razor to get the blade out",
        "i scratched my arms on purpose",
        "bit my hand until it went purple",
        "sh'd again after school",
        "i burned my arm and told my teacher it was the cat",
        "been pulling my eyelashes out, there are bald bits now",
        "hoping whatever this virus is just takes me",
    ],
    "harm to others": [
        "my stepmum is sleeping and i'm outside her room with a knife",
        "urges to push people in front of trains",
        "i want to drive into the crowd at the market",
        "i'm going to set fire to his flat",
        "i keep a blade in my pocket for when i see him",
        "grab my uncle's rifle and go round to their house",
        "i hit my son and i think i'll do it again",
        "imagining choking my flatmate",
    ],
    "harm from others": [
        "he says he'll share my nudes unless i pay",
        "my dad threatened me with a knife",
        "my boss is sending me threatening messages",
        "my mum hits me with a wooden spoon",
        "my ex is stalking me again",
        "i'm not allowed to see my friends without him",
    ],
}

MUST_NOT_HIT = {
    "everyday look-alikes of preparation": [
        "writing goodbye cards for the kids in my class, it's the end of term",
        "saying goodbye to everyone at the office before my maternity leave",
        "we labelled the boxes with everyone's names for the house move",
        "sorting out a will with the solicitor now the baby's here",
        "rehoming our dog because we're moving abroad, gutted",
        "gave my old bike to my nephew since i'm moving to a flat",
        "cancelled the gym and spotify to save money",
        "checking the train times for tomorrow's commute",
        "asked my neighbour to look after my cat while i'm on holiday",
        "how many paracetamol can i take for a migraine",
        "researching the height of the shard for my homework",
        "getting my affairs in order before my knee operation",
        "my nan's funeral playlist is all frank sinatra",
        "writing letters to my future self for the time capsule",
        "i wrote a list of who gets which chores on the rota",
    ],
    "everyday look-alikes of means": [
        "stocked the medicine cabinet with plasters and paracetamol",
        "bought charcoal for the barbecue on sunday",
        "we keep a shotgun on the farm for the foxes, licence and all",
        "bought rope for the boat",
        "my dad keeps his rifle locked in the cabinet for clay shooting",
        "i counted my tablets to see when the repeat prescription is due",
        "took all the old medicines back to the pharmacy",
        "the garage door finally closes properly after the repair",
        "walked to the cliffs at sunset to look over at the sea",
        "timing the trains for my commute spreadsheet",
        "i didn't take a single one of the codeine, didn't need it",
    ],
    "pasts that are over": [
        "i used to self harm in my teens but these days i'm fine",
        "fifteen years ago today i tried to end my life. so glad i'm still here",
        "today marks five years since my overdose and i'm doing so much better",
        "spent years wanting to die. not anymore",
        "i went through a phase of hoarding pills at uni, i'm 35 now and healthy",
        "i was suicidal when i was 19 but i'm doing really well now",
        "my suicidal years were in my twenties, i'm happier than i've ever been",
        "i once wrote goodbye letters, that was a long time ago and i'm in a good place now",
        "two years self-harm free today, celebrating",
        "the urges to cut have gone, they've gone after years of therapy",
        "i attempted in 2012. since then i've recovered and i'm well",
        "8 years since my last attempt and i've never been more hopeful",
    ],
    "look-alikes of the wider patterns": [
        "the new bridge is all i think about, it's such a cool design",
        "i'll take it all to the tip on saturday",
        "take the lot tonight, the charity shop van comes at 8",
        "i know how and when to ask for help now",
        "i've picked the date for the wedding, it'll be the last saturday in june",
        "i'm done living in this city, moving to leeds",
        "the plan hasn't changed, we meet at the bridge on sunday for the run",
        "i gave my old phone to my brother and cancelled my contract for a new one",
        "i stopped taking the antibiotics and kept the rest for next time, bad idea i know",
        "bought three packs of paracetamol at two different shops because one ran out",
        "sitting next to the tracks waiting for the next train to photograph",
        "driving to work and about to crash out on the sofa when i get home",
        "it won't stop bleeding, my nose has been going for ten minutes",
        "sat on the bridge for an hour watching the boats",
        "i want to jump off something high at the trampoline park",
        "looking at the tracks and thinking about the old steam trains",
        "considering suicide prevention training for our staff",
        "suicide is the answer to none of it, and i'm not suicidal",
        "i hit my head on the cupboard until i learnt to duck lol",
        "broke a pencil sharpener to get the blade out for my art project",
        "my dog is sleeping and i'm sitting here with the kitchen knife cutting veg",
        "i want to push people to do better at work",
        "i brought a knife to work to cut the birthday cake",
        "my boss says i can't tell anyone about the merger yet",
        "i'd be fine if i died my hair purple",
        "i'm in the sea now, it's freezing but amazing, wild swimming is the best",
        "the pills are kicking in, i can finally sleep",
        "my third attempt at sourdough was a success",
        "attempted twice this year to pass my driving test",
        "they pumped my stomach after i drank too much at the party",
        "i have a stash of chocolate and crisps under my bed",
        "kept all my tablets in the locked cabinet since the kids visit",
        "i counted my tablets to make sure the pharmacy gave me the right amount",
        "no point buying a new coat, i won't need it after this week because i'm moving to spain",
        "i'm not going to be around for the meeting tomorrow, dentist",
        "i sold my car and gave the money to my sister for her wedding",
        "wrote letters to everyone for christmas",
        "wrote thank you notes, sealed them and posted them",
        "i'm not sure the tablets in my bag will be enough for the trip",
        "left the car to my brother in a note while i'm abroad",
        "i keep my pills in my bag for when my migraine gets bad",
        "we went up to the top floor of the car park to check the view of the fireworks",
        "the roof has no railings, we need to tell the landlord before someone falls",
        "i'm going to use my dad's hose to wash the car on saturday",
        "decided on the lake for our honeymoon in june",
        "i'm ending it with him this weekend",
        "i can't trust myself not to eat the whole cake",
        "my mum keeps telling me to kill the spider",
        "talked me down off the price, great haggling",
        "set fire to the bbq and the sausages",
        "the kids aren't allowed out after dark in winter",
        "i cut my hand deeper than usual chopping onions",
        "scratched through the skin on my knee falling off my bike",
        "took them all to the vet this morning, the dogs are fine",
        "i'm going to die of boredom in this meeting",
        "this is my last week at this job before i retire",
        "saturday, the beach, my sister's birthday bbq",
        "running the car through the car wash",
        "really hope i don't wake up with a headache after the party",
        "i hope i don't wake up late for my flight",
        "i used to cut in school. i'm 30 now and i'm well",
    ],
    "negation": [
        "i have not been saving my tablets, i take them every morning",
        "i'm not going to use the rope, i'm just scared of how i feel",
        "i don't want to die, i just want this week to end",
        "no plan, no pills saved, just very low",
    ],
    "other hard negatives": [
        "in the novel the heroine rehomes her cat before the last chapter",
        "study finds people who survive an attempt rarely die by suicide later",
        "in our training we learned to ask about a plan and a date",
        "this song's lyrics are about wanting to die but it's so catchy",
        "this deadline is going to kill me lol",
        "i'm going to kill this presentation tomorrow",
    ],
}


def _cases(table: dict[str, list[str]]) -> list[tuple[str, str]]:
    return [(family, text) for family, texts in table.items() for text in texts]


@pytest.mark.parametrize(("family", "text"), _cases(MUST_HIT))
def test_the_rules_hit_a_fresh_phrasing(family: str, text: str) -> None:
    result = detect_crisis(text, use_classifier=False)
    assert result.crisis, (family, text)


@pytest.mark.parametrize(("family", "text"), _cases(MUST_NOT_HIT))
def test_the_rules_leave_a_look_alike_alone(family: str, text: str) -> None:
    result = detect_crisis(text, use_classifier=False)
    assert not result.crisis, (family, text, result.matched)


def test_these_phrasings_are_in_no_crisis_set() -> None:
    mine = {statement_key(text) for _, text in _cases(MUST_HIT) + _cases(MUST_NOT_HIT)}
    shared = {}
    for path in sorted(DATA.glob("crisis_*.jsonl")):
        lines = path.read_text(encoding="utf-8").split("\n")
        theirs = {statement_key(json.loads(line)["text"]) for line in lines if line.strip()}
        if mine & theirs:
            shared[path.name] = sorted(mine & theirs)  # this file's phrasings only: no other set's line is shown
    assert shared == {}
