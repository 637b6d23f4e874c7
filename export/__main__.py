from export.onnx_export import main

main()
