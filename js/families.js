// Generated from the family modules (families/*.py) by `python tests/generate_families_js.py`
// (tests/test_family_registry.py checks it is current). Do not edit by hand.
// `name` is what the node's messages call the model; `files` lists substrings that must all occur in a
// loader's file name (lowercased).
export const FAMILIES = [
  {"key": "wan_14b", "label": "Wan 2.1/2.2 14B", "name": "Wan", "double": 40, "single": 0, "files": [["wan", "14b"]]},
  {"key": "wan_small", "label": "Wan 2.1 1.3B / 2.2 5B", "name": "Wan", "double": 30, "single": 0, "files": [["wan", "1.3b"], ["wan", "5b"]]},
  {"key": "sd35_large", "label": "SD3.5 large", "name": "SD3 (MMDiT)", "double": 38, "single": 0, "files": [["sd3.5_large"]]},
  {"key": "sd3_medium", "label": "SD3 / SD3.5 medium", "name": "SD3 (MMDiT)", "double": 24, "single": 0, "files": [["sd3.5_medium"], ["sd3_medium"]]},
  {"key": "flux2_dev", "label": "Flux.2 dev", "name": "Flux.2", "double": 8, "single": 48, "files": [["flux2", "dev"], ["flux2_dev"], ["flux.2", "dev"]]},
  {"key": "flux2_klein", "label": "Flux.2 Klein", "name": "Flux.2", "double": 5, "single": 20, "files": [["flux2", "klein"], ["flux-2-klein"]]},
  {"key": "flux", "label": "Flux.1", "name": "Flux", "double": 19, "single": 38, "files": [["flux1-"], ["flux1_"]]},
  {"key": "chroma", "label": "Chroma", "name": "Chroma", "double": 19, "single": 38, "files": [["chroma"]]},
  {"key": "hunyuan_video", "label": "HunyuanVideo", "name": "HunyuanVideo", "double": 20, "single": 40, "files": [["hunyuan_video_t2v"], ["hunyuan_video_i2v"], ["hunyuan_video_image_to_video"]]},
  {"key": "hunyuan_video_15", "label": "HunyuanVideo 1.5", "name": "HunyuanVideo", "double": 54, "single": 0, "files": [["hunyuanvideo1.5"], ["hunyuan_video_1.5"]]},
  {"key": "hunyuan_image_21", "label": "HunyuanImage 2.1", "name": "HunyuanVideo", "double": 20, "single": 40, "files": [["hunyuanimage2.1"], ["hunyuan_image_2.1"]]},
  {"key": "qwen_image", "label": "Qwen-Image / Edit", "name": "Qwen-Image", "double": 60, "single": 0, "files": [["qwen_image"]]},
  {"key": "ltx2", "label": "LTX-2", "name": "LTX-2", "double": 48, "single": 0, "files": [["ltx-2"], ["ltx2"]]},
  {"key": "ltxv", "label": "LTX-Video", "name": "LTX-Video", "double": 28, "single": 0, "files": [["ltx-video"], ["ltxv"]]},
  {"key": "z_image", "label": "Z-Image", "name": "Z-Image / Lumina 2", "double": 30, "single": 0, "files": [["z_image"], ["z-image"]]},
  {"key": "lumina2", "label": "Lumina 2 / Neta", "name": "Z-Image / Lumina 2", "double": 26, "single": 0, "files": [["lumina_2"], ["lumina2"], ["neta"]]},
  {"key": "kandinsky5_image", "label": "Kandinsky 5 Image", "name": "Kandinsky 5", "double": 50, "single": 0, "files": [["kandinsky5", "t2i"], ["kandinsky5", "i2i"], ["kandinsky5", "image"]]},
  {"key": "kandinsky5_pro", "label": "Kandinsky 5 Pro (video)", "name": "Kandinsky 5", "double": 60, "single": 0, "files": [["kandinsky5", "pro"]]},
  {"key": "kandinsky5_lite", "label": "Kandinsky 5 Lite (video)", "name": "Kandinsky 5", "double": 32, "single": 0, "files": [["kandinsky5"]]},
];
