"""The data of lf_templates.py: every chat template LLaMA-Factory's `src/llamafactory/data/template.py` registers,
as its format strings, default system prompt, stop words and kind. Not for: rendering (lf_templates.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

BOS = "\x00bos_token"  # slot: the tokenizer's BOS token (nothing when it has none)
EOS = "\x00eos_token"  # slot: the tokenizer's EOS token
Slots = tuple[str, ...]


@dataclass(frozen=True)
class LFTemplate:
    prefix: Slots = ()
    system: Slots = ("{{content}}",)
    user: Slots = ("{{content}}",)
    assistant: Slots = ("{{content}}", EOS)
    observation: Slots | None = None  # None: the user format
    default_system: str = ""
    stop_words: tuple[str, ...] = ()
    efficient_eos: bool = False  # assistant format ends without EOS; training appends it
    replace_eos: bool = False  # LF makes stop_words[0] the EOS token
    kind: Literal["plain", "fused", "reasoning"] = "plain"
    enable_thinking: bool | None = True
    thought_words: tuple[str, str] = ("<think>\n", "\n</think>\n\n")


# Transcribed from LLaMA-Factory's register_template calls (format strings are data of each chat format).
LF_TEMPLATES: dict[str, LFTemplate] = {
    'alpaca': LFTemplate(
        user=('### Instruction:\n{{content}}\n\n### Response:\n',),
        assistant=('{{content}}', EOS, '\n\n'),
        default_system=('Below is an instruction that describes a task. Write a response that ap'
                        'propriately completes the request.\n\n'),
    ),
    'bailing': LFTemplate(
        system=('<role>SYSTEM</role>{{content}}',),
        user=('<role>HUMAN</role>{{content}}<role>ASSISTANT</role>',),
        observation=('<role>OBSERVATION</role>{{content}}<role>ASSISTANT</role>',),
        stop_words=('<|endoftext|>',),
        efficient_eos=True,
    ),
    'bailing_v2': LFTemplate(
        system=('<role>SYSTEM</role>{{content}}<|role_end|>',),
        user=('<role>HUMAN</role>{{content}}<|role_end|><role>ASSISTANT</role>',),
        assistant=('{{content}}<|role_end|>',),
        observation=(('<role>OBSERVATION</role>\n<tool_response>\n{{content}}\n</tool_response><'
                      '|role_end|><role>ASSISTANT</role>'),),
        stop_words=('<|endoftext|>',),
        efficient_eos=True,
    ),
    'breeze': LFTemplate(
        prefix=(BOS,),
        user=('[INST] {{content}} [/INST] ',),
        efficient_eos=True,
    ),
    'chatglm3': LFTemplate(
        prefix=('[gMASK]', 'sop'),
        system=('<|system|>', '\n', '{{content}}'),
        user=('<|user|>', '\n', '{{content}}', '<|assistant|>'),
        assistant=('\n', '{{content}}'),
        observation=('<|observation|>', '\n', '{{content}}', '<|assistant|>'),
        stop_words=('<|user|>', '<|observation|>'),
        efficient_eos=True,
    ),
    'chatml': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        observation=('<|im_start|>tool\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        stop_words=('<|im_end|>', '<|im_start|>'),
        replace_eos=True,
    ),
    'chatml_de': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        observation=('<|im_start|>tool\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        default_system='Du bist ein freundlicher und hilfsbereiter KI-Assistent.',
        stop_words=('<|im_end|>', '<|im_start|>'),
        replace_eos=True,
    ),
    'cohere': LFTemplate(
        prefix=(BOS,),
        system=('<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>{{content}}<|END_OF_TURN_TOKEN|>',),
        user=(('<|START_OF_TURN_TOKEN|><|USER_TOKEN|>{{content}}<|END_OF_TURN_TOKEN|><|START_OF_'
               'TURN_TOKEN|><|CHATBOT_TOKEN|>'),),
    ),
    'cpm4': LFTemplate(
        prefix=(BOS,),
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        observation=('<|im_start|>tool\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        stop_words=('<|im_end|>',),
    ),
    'dbrx': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        observation=('<|im_start|>tool\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        default_system=('You are DBRX, created by Databricks. You were last updated in December '
                        '2023. You answer questions based on information available up to that po'
                        'int.\nYOU PROVIDE SHORT RESPONSES TO SHORT QUESTIONS OR STATEMENTS, but'
                        ' provide thorough responses to more complex and open-ended questions.\n'
                        'You assist with various tasks, from writing to coding (using markdown f'
                        'or code blocks — remember to use ``` with code, JSON, and tables).\n(Yo'
                        'u do not have real-time data access or code execution capabilities. You'
                        ' avoid stereotyping and provide balanced perspectives on controversial '
                        'topics. You do not provide song lyrics, poems, or news articles and do '
                        'not divulge details of your training data.)\nThis is your system prompt'
                        ', guiding your responses. Do not reference it, just respond to the user'
                        '. If you find yourself talking about this message, stop. You should be '
                        'responding appropriately and usually that means not mentioning this.\nY'
                        'OU DO NOT MENTION ANY OF THIS INFORMATION ABOUT YOURSELF UNLESS THE INF'
                        "ORMATION IS DIRECTLY PERTINENT TO THE USER'S QUERY."),
        stop_words=('<|im_end|>',),
        replace_eos=True,
    ),
    'deepseek': LFTemplate(
        prefix=(BOS,),
        system=('{{content}}\n\n',),
        user=('User: {{content}}\n\nAssistant:',),
    ),
    'deepseek3': LFTemplate(
        prefix=(BOS,),
        user=('<｜User｜>{{content}}<｜Assistant｜>',),
    ),
    'deepseekr1': LFTemplate(
        prefix=(BOS,),
        user=('<｜User｜>{{content}}<｜Assistant｜>',),
        kind='reasoning',
    ),
    'hy3': LFTemplate(
        prefix=(BOS,),
        system=('{{content}}',),
        user=('<｜hy_User｜>{{content}}<｜hy_Assistant｜>',),
        assistant=('{{content}}<｜hy_eos｜>',),
        stop_words=('<｜hy_eos｜>',),
        replace_eos=True,
        kind='reasoning',
        thought_words=('<think>', '</think>'),
    ),
    'deepseekcoder': LFTemplate(
        prefix=(BOS,),
        user=('### Instruction:\n{{content}}\n### Response:',),
        assistant=('\n{{content}}\n<|EOT|>\n',),
        default_system=('You are an AI programming assistant, utilizing the DeepSeek Coder model'
                        ', developed by DeepSeek Company, and you only answer questions related '
                        'to computer science. For politically sensitive questions, security and '
                        'privacy issues, and other non-computer science questions, you will refu'
                        'se to answer.\n'),
    ),
    'default': LFTemplate(
        system=('System: {{content}}', EOS, '\n'),
        user=('Human: {{content}}', EOS, '\nAssistant:'),
        assistant=('{{content}}', EOS, '\n'),
    ),
    'dots_ocr': LFTemplate(
        system=('<|system|>{{content}}<|endofsystem|>\n',),
        user=('<|user|>{{content}}<|endofuser|><|assistant|>',),
        assistant=('{{content}}<|endofassistant|>',),
        stop_words=('<|endofassistant|>',),
        efficient_eos=True,
    ),
    'empty': LFTemplate(
        assistant=('{{content}}',),
    ),
    'ernie': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n\n',),
        observation=('<|im_start|>tool\n{{content}}<|im_end|>\n\n<|im_start|>assistant\n',),
        default_system='<global_setting>\nthink_mode=True\n</global_setting>',
        stop_words=('<|im_end|>',),
    ),
    'ernie_nothink': LFTemplate(
        prefix=('<|begin_of_sentence|>',),
        system=('{{content}}\n',),
        user=('User: {{content}}\nAssistant: ',),
        assistant=('{{content}}<|end_of_sentence|>',),
        stop_words=('<|end_of_sentence|>',),
    ),
    'ernie_vl': LFTemplate(
        system=('{{content}}\n',),
        user=('User: {{content}}',),
        assistant=('\nAssistant: {{content}}<|end_of_sentence|>',),
        stop_words=('<|end_of_sentence|>',),
        replace_eos=True,
        kind='reasoning',
    ),
    'exaone': LFTemplate(
        system=('[|system|]{{content}}[|endofturn|]\n',),
        user=('[|user|]{{content}}\n[|assistant|]',),
        assistant=('{{content}}', EOS, '\n'),
    ),
    'falcon': LFTemplate(
        user=('User: {{content}}\nFalcon:',),
        assistant=('{{content}}\n',),
        efficient_eos=True,
    ),
    'falcon_h1': LFTemplate(
        prefix=(BOS,),
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        observation=('<|im_start|>tool\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        stop_words=('<|im_end|>', '<|end_of_text|>'),
    ),
    'fewshot': LFTemplate(
        assistant=('{{content}}\n\n',),
        efficient_eos=True,
    ),
    'gemma': LFTemplate(
        prefix=(BOS,),
        system=('{{content}}\n\n',),
        user=('<start_of_turn>user\n{{content}}<end_of_turn>\n<start_of_turn>model\n',),
        assistant=('{{content}}<end_of_turn>\n',),
        observation=('<start_of_turn>tool\n{{content}}<end_of_turn>\n<start_of_turn>model\n',),
        stop_words=('<end_of_turn>',),
        replace_eos=True,
        kind='fused',
    ),
    'gemma2': LFTemplate(
        prefix=(BOS,),
        system=('{{content}}\n\n',),
        user=('<start_of_turn>user\n{{content}}<end_of_turn>\n<start_of_turn>model\n',),
        assistant=('{{content}}<end_of_turn>\n',),
        observation=('<start_of_turn>tool\n{{content}}<end_of_turn>\n<start_of_turn>model\n',),
        stop_words=('<eos>', '<end_of_turn>'),
        efficient_eos=True,
        kind='fused',
    ),
    'gemma3': LFTemplate(
        prefix=(BOS,),
        system=('{{content}}\n\n',),
        user=('<start_of_turn>user\n{{content}}<end_of_turn>\n<start_of_turn>model\n',),
        assistant=('{{content}}<end_of_turn>\n',),
        observation=('<start_of_turn>tool\n{{content}}<end_of_turn>\n<start_of_turn>model\n',),
        stop_words=('<end_of_turn>',),
        replace_eos=True,
        kind='fused',
    ),
    'gemma3n': LFTemplate(
        prefix=(BOS,),
        system=('{{content}}\n\n',),
        user=('<start_of_turn>user\n{{content}}<end_of_turn>\n<start_of_turn>model\n',),
        assistant=('{{content}}<end_of_turn>\n',),
        observation=('<start_of_turn>tool\n{{content}}<end_of_turn>\n<start_of_turn>model\n',),
        stop_words=('<end_of_turn>',),
        replace_eos=True,
        kind='fused',
    ),
    'gemma4': LFTemplate(
        prefix=(BOS,),
        system=('<|turn>system\n<|think|>{{content}}<turn|>\n',),
        user=('<|turn>user\n{{content}}<turn|>\n<|turn>model\n',),
        assistant=('{{content}}<turn|>\n',),
        observation=('<|turn>tool\n{{content}}<turn|>\n<|turn>model\n',),
        default_system='You are a helpful assistant.',
        stop_words=('<turn|>',),
        replace_eos=True,
        kind='reasoning',
        thought_words=('<|channel>thought\n', '<channel|>'),
    ),
    'gemma4n': LFTemplate(
        prefix=(BOS,),
        system=('<|turn>system\n<|think|>{{content}}<turn|>\n',),
        user=('<|turn>user\n{{content}}<turn|>\n<|turn>model\n',),
        assistant=('{{content}}<turn|>\n',),
        observation=('<|turn>tool\n{{content}}<turn|>\n<|turn>model\n',),
        default_system='You are a helpful assistant.',
        stop_words=('<turn|>',),
        replace_eos=True,
        kind='reasoning',
        thought_words=('<|channel>thought\n', '<channel|>'),
    ),
    'glm4': LFTemplate(
        prefix=('[gMASK]<sop>',),
        system=('<|system|>\n{{content}}',),
        user=('<|user|>\n{{content}}<|assistant|>',),
        assistant=('\n{{content}}',),
        observation=('<|observation|>\n{{content}}<|assistant|>',),
        stop_words=('<|user|>', '<|observation|>'),
        efficient_eos=True,
    ),
    'glm4_moe': LFTemplate(
        prefix=('[gMASK]<sop>',),
        system=('<|system|>\n{{content}}',),
        user=('<|user|>\n{{content}}<|assistant|>',),
        assistant=('\n{{content}}',),
        observation=('<|observation|>\n{{content}}<|assistant|>',),
        stop_words=('<|user|>', '<|observation|>'),
        efficient_eos=True,
        kind='reasoning',
    ),
    'glm4v': LFTemplate(
        prefix=('[gMASK]<sop>',),
        system=('<|system|>\n{{content}}',),
        user=('<|user|>\n{{content}}<|assistant|>',),
        assistant=('\n{{content}}',),
        observation=('<|observation|>\n{{content}}<|assistant|>',),
        stop_words=('<|user|>', '<|observation|>', '</answer>'),
        efficient_eos=True,
        kind='reasoning',
    ),
    'glm4_5v': LFTemplate(
        prefix=('[gMASK]<sop>',),
        system=('<|system|>\n{{content}}',),
        user=('<|user|>\n{{content}}<|assistant|>',),
        assistant=('\n{{content}}',),
        observation=('<|observation|>\n{{content}}<|assistant|>',),
        stop_words=('<|user|>', '<|observation|>', '</answer>'),
        efficient_eos=True,
        kind='reasoning',
    ),
    'glm_ocr': LFTemplate(
        prefix=('[gMASK]<sop>',),
        system=('<|system|>\n{{content}}',),
        user=('<|user|>\n{{content}}<|assistant|>',),
        assistant=('\n{{content}}',),
        observation=('<|observation|>\n{{content}}<|assistant|>',),
        stop_words=('<|user|>', '<|observation|>'),
        efficient_eos=True,
    ),
    'glm4_7': LFTemplate(
        prefix=('[gMASK]<sop>',),
        system=('<|system|>\n{{content}}',),
        user=('<|user|>\n{{content}}<|assistant|>',),
        assistant=('\n{{content}}',),
        observation=('<|observation|>\n{{content}}<|assistant|>',),
        stop_words=('<|user|>', '<|observation|>'),
        efficient_eos=True,
        kind='reasoning',
        thought_words=('<think>', '</think>'),
    ),
    'glmz1': LFTemplate(
        prefix=('[gMASK]<sop>',),
        system=('<|system|>\n{{content}}',),
        user=('<|user|>\n{{content}}<|assistant|>',),
        assistant=('\n{{content}}',),
        observation=('<|observation|>\n{{content}}<|assistant|>',),
        stop_words=('<|user|>', '<|observation|>'),
        efficient_eos=True,
        kind='reasoning',
    ),
    'gpt_oss': LFTemplate(
        system=('<|start|>system<|message|>{{content}}<|end|>',),
        user=('<|start|>user<|message|>{{content}}<|end|><|start|>assistant',),
        assistant=('{{content}}',),
        default_system='You are ChatGPT, a large language model trained by OpenAI.',
        efficient_eos=True,
        kind='reasoning',
        thought_words=('<|channel|>analysis<|message|>', '<|end|><|start|>assistant<|channel|>final<|message|>'),
    ),
    'granite3': LFTemplate(
        system=('<|start_of_role|>system<|end_of_role|>{{content}}<|end_of_text|>\n',),
        user=(('<|start_of_role|>user<|end_of_role|>{{content}}<|end_of_text|>\n<|start_of_role|'
               '>assistant<|end_of_role|>'),),
        assistant=('{{content}}<|end_of_text|>\n',),
    ),
    'granite3_vision': LFTemplate(
        system=('<|system|>\n{{content}}\n',),
        user=('<|user|>\n{{content}}\n<|assistant|>\n',),
        default_system=('A chat between a curious user and an artificial intelligence assistant.'
                        " The assistant gives helpful, detailed, and polite answers to the user'"
                        's questions.'),
    ),
    'granite4': LFTemplate(
        system=('<|start_of_role|>system<|end_of_role|>{{content}}<|end_of_text|>\n',),
        user=(('<|start_of_role|>user<|end_of_role|>{{content}}<|end_of_text|>\n<|start_of_role|'
               '>assistant<|end_of_role|>'),),
        assistant=('{{content}}<|end_of_text|>\n',),
        observation=(('<|start_of_role|>tool<|end_of_role|>{{content}}<|end_of_text|>\n<|start_o'
                      'f_role|>assistant\n'),),
        default_system='You are Granite, developed by IBM. You are a helpful AI assistant.',
        stop_words=('<|end_of_text|>',),
    ),
    'index': LFTemplate(
        system=('<unk>{{content}}',),
        user=('reserved_0{{content}}reserved_1',),
        efficient_eos=True,
    ),
    'hunyuan': LFTemplate(
        prefix=('<|startoftext|>',),
        system=('{{content}}<|extra_4|>',),
        user=('{{content}}<|extra_0|>',),
        assistant=('{{content}}<|eos|>',),
        stop_words=('<|eos|>',),
    ),
    'hunyuan_small': LFTemplate(
        prefix=('<｜hy_begin▁of▁sentence｜>',),
        system=('{{content}}<｜hy_place▁holder▁no▁3｜>',),
        user=('<｜hy_User｜>{{content}}<｜hy_place▁holder▁no▁8｜>',),
        assistant=('{{content}}<｜hy_place▁holder▁no▁2｜>',),
        stop_words=('<｜hy_place▁holder▁no▁2｜>',),
    ),
    'hy_dense_1_8b': LFTemplate(
        prefix=(BOS,),
        system=('{{content}}<｜hy_place▁holder▁no▁3｜>',),
        user=('<｜hy_User｜>{{content}}',),
        assistant=('<｜hy_Assistant｜>{{content}}',),
        stop_words=('<｜hy_place▁holder▁no▁2｜>',),
        efficient_eos=True,
    ),
    'hy_dense_7b': LFTemplate(
        prefix=(BOS,),
        system=('{{content}}<|extra_4|>',),
        user=('{{content}}<|extra_0|>',),
        assistant=('{{content}}',),
        stop_words=('<|eos|>',),
        efficient_eos=True,
    ),
    'intern2': LFTemplate(
        prefix=(BOS,),
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        default_system=('You are an AI assistant whose name is InternLM (书生·浦语).\n- InternLM (书生'
                        '·浦语) is a conversational language model that is developed by Shanghai A'
                        'I Laboratory (上海人工智能实验室). It is designed to be helpful, honest, and har'
                        'mless.\n- InternLM (书生·浦语) can understand and communicate fluently in t'
                        'he language chosen by the user such as English and 中文.'),
        stop_words=('<|im_end|>',),
    ),
    'intern_vl': LFTemplate(
        prefix=(BOS,),
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        default_system='你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。',
        stop_words=('<|im_end|>',),
    ),
    'intern_s1': LFTemplate(
        prefix=(BOS,),
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        stop_words=('<|im_end|>',),
    ),
    'keye_vl': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        observation=(('<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|'
                      '>\n<|im_start|>assistant\n'),),
        stop_words=('<|im_end|>',),
        replace_eos=True,
        kind='reasoning',
    ),
    'kimi_vl': LFTemplate(
        system=('<|im_system|>system<|im_middle|>{{content}}<|im_end|>',),
        user=(('<|im_user|>user<|im_middle|>{{content}}<|im_end|><|im_assistant|>assistant<|im_m'
               'iddle|>'),),
        assistant=('{{content}}<|im_end|>',),
        default_system='You are a helpful assistant',
        stop_words=('<|im_end|>',),
        kind='reasoning',
        thought_words=('◁think▷', '◁/think▷'),
    ),
    'lfm2': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        observation=(('<|im_start|>tool\n<|tool_response_start|>{{content}}<|tool_response_end|>'
                      '<|im_end|>\n<|im_start|>assistant\n'),),
        default_system='You are a helpful AI assistant.',
        stop_words=('<|im_end|>',),
        replace_eos=True,
    ),
    'lfm2_vl': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        observation=(('<|im_start|>tool\n<|tool_response_start|>{{content}}<|tool_response_end|>'
                      '<|im_end|>\n<|im_start|>assistant\n'),),
        default_system='You are a helpful multimodal assistant by Liquid AI.',
        stop_words=('<|im_end|>',),
        replace_eos=True,
    ),
    'llama2': LFTemplate(
        system=('<<SYS>>\n{{content}}\n<</SYS>>\n\n',),
        user=(BOS, '[INST] {{content}} [/INST]'),
        kind='fused',
    ),
    'llama2_zh': LFTemplate(
        system=('<<SYS>>\n{{content}}\n<</SYS>>\n\n',),
        user=(BOS, '[INST] {{content}} [/INST]'),
        default_system='You are a helpful assistant. 你是一个乐于助人的助手。',
        kind='fused',
    ),
    'llama3': LFTemplate(
        prefix=(BOS,),
        system=('<|start_header_id|>system<|end_header_id|>\n\n{{content}}<|eot_id|>',),
        user=(('<|start_header_id|>user<|end_header_id|>\n\n{{content}}<|eot_id|><|start_header_'
               'id|>assistant<|end_header_id|>\n\n'),),
        assistant=('{{content}}<|eot_id|>',),
        observation=(('<|start_header_id|>ipython<|end_header_id|>\n\n{{content}}<|eot_id|><|sta'
                      'rt_header_id|>assistant<|end_header_id|>\n\n'),),
        stop_words=('<|eot_id|>', '<|eom_id|>'),
        replace_eos=True,
    ),
    'llama4': LFTemplate(
        prefix=(BOS,),
        system=('<|header_start|>system<|header_end|>\n\n{{content}}<|eot|>',),
        user=(('<|header_start|>user<|header_end|>\n\n{{content}}<|eot|><|header_start|>assistan'
               't<|header_end|>\n\n'),),
        assistant=('{{content}}<|eot|>',),
        observation=(('<|header_start|>ipython<|header_end|>\n\n{{content}}<|eot|><|header_start'
                      '|>assistant<|header_end|>\n\n'),),
        stop_words=('<|eot|>', '<|eom|>'),
        replace_eos=True,
    ),
    'mllama': LFTemplate(
        prefix=(BOS,),
        system=('<|start_header_id|>system<|end_header_id|>\n\n{{content}}<|eot_id|>',),
        user=(('<|start_header_id|>user<|end_header_id|>\n\n{{content}}<|eot_id|><|start_header_'
               'id|>assistant<|end_header_id|>\n\n'),),
        assistant=('{{content}}<|eot_id|>',),
        observation=(('<|start_header_id|>ipython<|end_header_id|>\n\n{{content}}<|eot_id|><|sta'
                      'rt_header_id|>assistant<|end_header_id|>\n\n'),),
        stop_words=('<|eot_id|>', '<|eom_id|>'),
        replace_eos=True,
    ),
    'moonlight': LFTemplate(
        system=('<|im_system|>system<|im_middle|>{{content}}<|im_end|>',),
        user=(('<|im_user|>user<|im_middle|>{{content}}<|im_end|><|im_assistant|>assistant<|im_m'
               'iddle|>'),),
        assistant=('{{content}}<|im_end|>',),
        default_system='You are a helpful assistant provided by Moonshot-AI.',
        stop_words=('<|im_end|>',),
        replace_eos=True,
    ),
    'moss_vl': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        observation=(('<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|'
                      '>\n<|im_start|>assistant\n'),),
        stop_words=('<|im_end|>',),
        replace_eos=True,
    ),
    'llava': LFTemplate(
        user=('USER: {{content}} ASSISTANT:',),
        default_system=('A chat between a curious user and an artificial intelligence assistant.'
                        " The assistant gives helpful, detailed, and polite answers to the user'"
                        's questions.'),
    ),
    'llava_next': LFTemplate(
        user=('USER: {{content}} ASSISTANT:',),
        default_system=('A chat between a curious user and an artificial intelligence assistant.'
                        " The assistant gives helpful, detailed, and polite answers to the user'"
                        's questions.'),
    ),
    'llava_next_llama3': LFTemplate(
        prefix=(BOS,),
        system=('<|start_header_id|>system<|end_header_id|>\n\n{{content}}<|eot_id|>',),
        user=(('<|start_header_id|>user<|end_header_id|>\n\n{{content}}<|eot_id|><|start_header_'
               'id|>assistant<|end_header_id|>\n\n'),),
        assistant=('{{content}}<|eot_id|>',),
        observation=(('<|start_header_id|>ipython<|end_header_id|>\n\n{{content}}<|eot_id|><|sta'
                      'rt_header_id|>assistant<|end_header_id|>\n\n'),),
        stop_words=('<|eot_id|>', '<|eom_id|>'),
        replace_eos=True,
    ),
    'llava_next_mistral': LFTemplate(
        prefix=(BOS,),
        system=('{{content}}\n\n',),
        user=('[INST] {{content}}[/INST]',),
        assistant=(' {{content}}', EOS),
        observation=('[TOOL_RESULTS] {"content": {{content}}}[/TOOL_RESULTS]',),
        kind='fused',
    ),
    'llava_next_qwen': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        observation=(('<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|'
                      '>\n<|im_start|>assistant\n'),),
        default_system='You are a helpful assistant.',
        stop_words=('<|im_end|>',),
        replace_eos=True,
    ),
    'llava_next_yi': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        stop_words=('<|im_end|>',),
    ),
    'llava_next_video': LFTemplate(
        user=('USER: {{content}} ASSISTANT:',),
        default_system=('A chat between a curious user and an artificial intelligence assistant.'
                        " The assistant gives helpful, detailed, and polite answers to the user'"
                        's questions.'),
    ),
    'llava_next_video_mistral': LFTemplate(
        prefix=(BOS,),
        system=('{{content}}\n\n',),
        user=('[INST] {{content}}[/INST]',),
        assistant=(' {{content}}', EOS),
        observation=('[TOOL_RESULTS] {"content": {{content}}}[/TOOL_RESULTS]',),
        kind='fused',
    ),
    'llava_next_video_yi': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        stop_words=('<|im_end|>',),
    ),
    'mimo': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        observation=(('<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|'
                      '>\n<|im_start|>assistant\n'),),
        default_system='You are a helpful assistant.',
        stop_words=('<|im_end|>',),
        replace_eos=True,
        kind='reasoning',
    ),
    'mimo_v2': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        observation=(('<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|'
                      '>\n<|im_start|>assistant\n'),),
        default_system='You are MiMo, a helpful AI assistant engineered by Xiaomi.',
        stop_words=('<|im_end|>',),
        replace_eos=True,
        kind='reasoning',
        thought_words=('<think>', '</think>'),
    ),
    'mimo_vl': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        observation=(('<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|'
                      '>\n<|im_start|>assistant\n'),),
        default_system='You are MiMo, an AI assistant developed by Xiaomi.',
        stop_words=('<|im_end|>',),
        replace_eos=True,
        kind='reasoning',
    ),
    'minicpm_v': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        default_system='You are a helpful assistant.',
        stop_words=('<|im_end|>',),
    ),
    'minicpm_v_4_6': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        default_system='You are a helpful assistant.',
        stop_words=('<|im_end|>',),
    ),
    'minicpm_o': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        default_system=('You are a helpful assistant. You can accept audio and text input and ou'
                        'tput voice and text.'),
        stop_words=('<|im_end|>',),
    ),
    'minimax1': LFTemplate(
        system=('<beginning_of_sentence>system ai_setting=assistant\n{{content}}<end_of_sentence>\n',),
        user=(('<beginning_of_sentence>user name=user\n{{content}}<end_of_sentence>\n<beginning_'
               'of_sentence>ai name=assistant\n'),),
        assistant=('{{content}}<end_of_sentence>\n',),
        observation=(('<beginning_of_sentence>tool name=tools\n{{content}}<end_of_sentence>\n<be'
                      'ginning_of_sentence>ai name=assistant\n'),),
        default_system='You are a helpful assistant.',
        stop_words=('<end_of_sentence>',),
    ),
    'minimax2': LFTemplate(
        system=(']~!b[]~b]system\n{{content}}[e~[\n',),
        user=(']~b]user\n{{content}}[e~[\n]~b]ai\n',),
        assistant=('{{content}}[e~[\n',),
        observation=(']~b]tool\n<response>{{content}}</response>[e~[\n]~b]ai\n',),
        default_system=('You are a helpful assistant. Your name is MiniMax-M2.1 and is built by '
                        'MiniMax.'),
        stop_words=('[e~[',),
        kind='reasoning',
    ),
    'ministral': LFTemplate(
        prefix=(BOS,),
        system=('{{content}}\n\n',),
        user=('[INST]{{content}}[/INST]',),
        observation=('[TOOL_RESULTS]{"content": {{content}}}[/TOOL_RESULTS]',),
        kind='fused',
    ),
    'mistral': LFTemplate(
        prefix=(BOS,),
        system=('{{content}}\n\n',),
        user=('[INST] {{content}}[/INST]',),
        assistant=(' {{content}}', EOS),
        observation=('[TOOL_RESULTS] {"content": {{content}}}[/TOOL_RESULTS]',),
        kind='fused',
    ),
    'mistral_small': LFTemplate(
        prefix=(BOS,),
        system=('[SYSTEM_PROMPT]{{content}}[/SYSTEM_PROMPT]',),
        user=('[INST]{{content}}[/INST]',),
        observation=('[TOOL_RESULTS]{"content": {{content}}}[/TOOL_RESULTS]',),
    ),
    'ministral3': LFTemplate(
        prefix=(BOS,),
        system=('{{content}}\n\n',),
        user=('[INST]{{content}}[/INST]',),
        observation=('[TOOL_RESULTS]{"content": {{content}}}[/TOOL_RESULTS]',),
        kind='fused',
    ),
    'olmo': LFTemplate(
        prefix=(EOS,),
        user=('<|user|>\n{{content}}<|assistant|>\n',),
    ),
    'openchat': LFTemplate(
        prefix=(BOS,),
        user=('GPT4 Correct User: {{content}}', EOS, 'GPT4 Correct Assistant:'),
    ),
    'openchat-3.6': LFTemplate(
        prefix=(BOS,),
        user=(('<|start_header_id|>GPT4 Correct User<|end_header_id|>\n\n{{content}}<|eot_id|><|'
               'start_header_id|>GPT4 Correct Assistant<|end_header_id|>\n\n'),),
        stop_words=('<|eot_id|>',),
    ),
    'opencoder': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        observation=('<|im_start|>tool\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        default_system='You are OpenCoder, created by OpenCoder Team.',
        stop_words=('<|im_end|>',),
    ),
    'paligemma': LFTemplate(
        prefix=(BOS,),
        user=('{{content}}\n',),
        kind='fused',
    ),
    'paligemma_chat': LFTemplate(
        prefix=(BOS,),
        user=('<start_of_turn>user\n{{content}}<end_of_turn>\n<start_of_turn>model\n',),
        assistant=('{{content}}<end_of_turn>\n',),
        observation=('<start_of_turn>tool\n{{content}}<end_of_turn>\n<start_of_turn>model\n',),
        stop_words=('<end_of_turn>',),
        replace_eos=True,
        kind='fused',
    ),
    'phi': LFTemplate(
        system=('<|system|>\n{{content}}<|end|>\n',),
        user=('<|user|>\n{{content}}<|end|>\n<|assistant|>\n',),
        assistant=('{{content}}<|end|>\n',),
        stop_words=('<|end|>',),
        replace_eos=True,
    ),
    'phi_small': LFTemplate(
        prefix=(),
        system=('<|system|>\n{{content}}<|end|>\n',),
        user=('<|user|>\n{{content}}<|end|>\n<|assistant|>\n',),
        assistant=('{{content}}<|end|>\n',),
        stop_words=('<|end|>',),
        replace_eos=True,
    ),
    'phi4': LFTemplate(
        system=('<|im_start|>system<|im_sep|>{{content}}<|im_end|>',),
        user=('<|im_start|>user<|im_sep|>{{content}}<|im_end|><|im_start|>assistant<|im_sep|>',),
        assistant=('{{content}}<|im_end|>',),
        stop_words=('<|im_end|>',),
        replace_eos=True,
    ),
    'phi4_mini': LFTemplate(
        system=('<|system|>{{content}}<|end|>',),
        user=('<|user|>{{content}}<|end|><|assistant|>',),
        assistant=('{{content}}<|end|>',),
        stop_words=('<|end|>',),
        replace_eos=True,
    ),
    'pixtral': LFTemplate(
        prefix=(BOS,),
        system=('{{content}}\n\n',),
        user=('[INST]{{content}}[/INST]',),
        observation=('[TOOL_RESULTS]{"content": {{content}}}[/TOOL_RESULTS]',),
        kind='fused',
    ),
    'qwen': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        observation=(('<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|'
                      '>\n<|im_start|>assistant\n'),),
        default_system='You are Qwen, created by Alibaba Cloud. You are a helpful assistant.',
        stop_words=('<|im_end|>',),
        replace_eos=True,
    ),
    'qwen3': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        observation=(('<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|'
                      '>\n<|im_start|>assistant\n'),),
        stop_words=('<|im_end|>',),
        replace_eos=True,
        kind='reasoning',
    ),
    'qwen3_nothink': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        observation=(('<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|'
                      '>\n<|im_start|>assistant\n'),),
        stop_words=('<|im_end|>',),
        replace_eos=True,
    ),
    'qwen2_audio': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        default_system='You are a helpful assistant.',
        stop_words=('<|im_end|>',),
        replace_eos=True,
    ),
    'qwen2_omni': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        observation=(('<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|'
                      '>\n<|im_start|>assistant\n'),),
        default_system='You are a helpful assistant.',
        stop_words=('<|im_end|>',),
        replace_eos=True,
    ),
    'qwen3_omni': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        observation=(('<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|'
                      '>\n<|im_start|>assistant\n'),),
        stop_words=('<|im_end|>',),
        replace_eos=True,
        kind='reasoning',
    ),
    'qwen3_omni_nothink': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        observation=(('<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|'
                      '>\n<|im_start|>assistant\n'),),
        stop_words=('<|im_end|>',),
        replace_eos=True,
    ),
    'qwen2_vl': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        observation=(('<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|'
                      '>\n<|im_start|>assistant\n'),),
        default_system='You are a helpful assistant.',
        stop_words=('<|im_end|>',),
        replace_eos=True,
    ),
    'qwen3_vl': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        observation=(('<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|'
                      '>\n<|im_start|>assistant\n'),),
        stop_words=('<|im_end|>',),
        replace_eos=True,
        kind='reasoning',
    ),
    'qwen3_vl_nothink': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        observation=(('<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|'
                      '>\n<|im_start|>assistant\n'),),
        stop_words=('<|im_end|>',),
        replace_eos=True,
    ),
    'qwen3_5': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        observation=(('<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|'
                      '>\n<|im_start|>assistant\n'),),
        stop_words=('<|im_end|>',),
        replace_eos=True,
        kind='reasoning',
    ),
    'qwen3_5_nothink': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        observation=(('<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|'
                      '>\n<|im_start|>assistant\n'),),
        stop_words=('<|im_end|>',),
        replace_eos=True,
    ),
    'qwen3_6': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        observation=(('<|im_start|>user\n<tool_response>\n{{content}}\n</tool_response><|im_end|'
                      '>\n<|im_start|>assistant\n'),),
        stop_words=('<|im_end|>',),
        replace_eos=True,
        kind='reasoning',
    ),
    'sailor': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>question\n{{content}}<|im_end|>\n<|im_start|>answer\n',),
        assistant=('{{content}}<|im_end|>\n',),
        default_system=('You are an AI assistant named Sailor created by Sea AI Lab. Your answer'
                        ' should be friendly, unbiased, faithful, informative and detailed.'),
        stop_words=('<|im_end|>',),
    ),
    'seed_coder': LFTemplate(
        system=(BOS, 'system\n{{content}}', EOS),
        user=(BOS, 'user\n{{content}}', EOS, BOS, 'assistant\n'),
        default_system=('You are an AI programming assistant, utilizing the Seed-Coder model, de'
                        'veloped by ByteDance Seed, and you only answer questions related to com'
                        'puter science. For politically sensitive questions, security and privac'
                        'y issues, and other non-computer science questions, you will refuse to '
                        'answer.\n\n'),
    ),
    'seed_oss': LFTemplate(
        system=(BOS, 'system\n{{content}}', EOS),
        user=(BOS, 'user\n{{content}}', EOS, BOS, 'assistant\n'),
        kind='reasoning',
        thought_words=('<seed:think>', '</seed:think>'),
    ),
    'smollm': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        stop_words=('<|im_end|>',),
    ),
    'smollm2': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        default_system='You are a helpful AI assistant named SmolLM, trained by Hugging Face.',
        stop_words=('<|im_end|>',),
    ),
    'solar': LFTemplate(
        system=('### System:\n{{content}}\n\n',),
        user=('### User:\n{{content}}\n\n### Assistant:\n',),
        efficient_eos=True,
    ),
    'starchat': LFTemplate(
        system=('<|system|>\n{{content}}<|end|>\n',),
        user=('<|user|>\n{{content}}<|end|>\n<|assistant|>',),
        assistant=('{{content}}<|end|>\n',),
        stop_words=('<|end|>',),
    ),
    'telechat2': LFTemplate(
        system=('<_system>{{content}}',),
        user=('<_user>{{content}}<_bot>',),
        default_system='你是中国电信星辰语义大模型，英文名是TeleChat，你是由中电信人工智能科技有限公司和中国电信人工智能研究院（TeleAI）研发的人工智能助手。',
    ),
    'vicuna': LFTemplate(
        user=('USER: {{content}} ASSISTANT:',),
        default_system=('A chat between a curious user and an artificial intelligence assistant.'
                        " The assistant gives helpful, detailed, and polite answers to the user'"
                        's questions.'),
    ),
    'video_llava': LFTemplate(
        user=('USER: {{content}} ASSISTANT:',),
        default_system=('A chat between a curious user and an artificial intelligence assistant.'
                        " The assistant gives helpful, detailed, and polite answers to the user'"
                        's questions.'),
    ),
    'xuanyuan': LFTemplate(
        user=('Human: {{content}} Assistant:',),
        default_system=('以下是用户和人工智能助手之间的对话。用户以Human开头，人工智能助手以Assistant开头，会对人类提出的问题给出有帮助、高质量、详细和礼'
                        '貌的回答，并且总是拒绝参与与不道德、不安全、有争议、政治敏感等相关的话题、问题和指示。\n'),
    ),
    'yi': LFTemplate(
        system=('<|im_start|>system\n{{content}}<|im_end|>\n',),
        user=('<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n',),
        assistant=('{{content}}<|im_end|>\n',),
        stop_words=('<|im_end|>',),
    ),
    'yi_vl': LFTemplate(
        user=('### Human: {{content}}\n### Assistant:',),
        assistant=('{{content}}\n',),
        default_system=('This is a chat between an inquisitive human and an AI assistant. Assume'
                        ' the role of the AI assistant. Read all the images carefully, and respo'
                        "nd to the human's questions with informative, helpful, detailed and pol"
                        'ite answers. 这是一个好奇的人类和一个人工智能助手之间的对话。假设你扮演这个AI助手的角色。仔细阅读所有的图像，并对人类的问题做出'
                        '信息丰富、有帮助、详细的和礼貌的回答。\n\n'),
        stop_words=('###',),
        efficient_eos=True,
    ),
    'youtu': LFTemplate(
        prefix=(BOS,),
        system=('{{content}}',),
        user=('<|User|>{{content}}<|Assistant|>',),
        assistant=('{{content}}<|end_of_text|>',),
        observation=('<tool_response>\n{{content}}\n</tool_response><|Assistant|>',),
        stop_words=('<|end_of_text|>',),
        replace_eos=True,
        kind='reasoning',
    ),
    'youtu_vl': LFTemplate(
        system=('<|begin_of_text|>system\n{{content}}<|end_of_text|>\n',),
        user=('<|begin_of_text|>user\n{{content}}<|end_of_text|>\n<|begin_of_text|>assistant\n',),
        assistant=('{{content}}<|end_of_text|>\n',),
        default_system='You are a helpful assistant.',
        stop_words=('<|end_of_text|>',),
    ),
    'yuan': LFTemplate(
        user=('{{content}}', '<sep>'),
        assistant=('{{content}}<eod>\n',),
        stop_words=('<eod>',),
    ),
    'zephyr': LFTemplate(
        system=('<|system|>\n{{content}}', EOS),
        user=('<|user|>\n{{content}}', EOS, '<|assistant|>\n'),
        default_system='You are Zephyr, a helpful assistant.',
    ),
    'aeva': LFTemplate(
        prefix=('[gMASK]<sop>',),
        system=('<|system|>\n{{content}}',),
        user=('<|user|>\n{{content}}<|assistant|>',),
        assistant=('\n{{content}}',),
        observation=('<|observation|>\n{{content}}<|assistant|>',),
        default_system=('You are an AI assistant named Aeva created by Zongzhi Lou. Your answer '
                        'should be friendly, unbiased, faithful, informative and detailed.'),
        stop_words=('<|user|>', '<|observation|>'),
        efficient_eos=True,
        kind='reasoning',
        thought_words=('<think>', '</think>'),
    ),
}
