;;; torch-lsp.el --- PyTorch LSP for eglot, lsp-mode -*- lexical-binding: t; -*-

;; Version: 0.1.0
;; Package-Requires: ((emacs "27.1"))
;; Keywords: languages, tools
;; URL: https://github.com/torch-lsp/torch-lsp

;;; Commentary:

;; Registers `torch-lsp serve' with eglot (`eglot-server-programs') and
;; with lsp-mode (`lsp-register-client', as an add-on next to your usual
;; Python server), and adds commands:
;;
;;   M-x torch-lsp-train          run the current script with live metrics
;;   M-x torch-lsp-stop-training  stop the latest (or a named) run
;;   M-x torch-lsp-metrics        summary of the latest (or a named) run
;;   M-x torch-lsp-summary        model summary of the current file
;;   M-x torch-lsp-memory         training step memory, largest batch that fits
;;   M-x torch-lsp-server-info    version, interpreter, settings
;;
;; Setup:
;;   (add-to-list 'load-path "/path/to/torch-lsp/editors/emacs")
;;   (require 'torch-lsp)
;;   (add-hook 'python-mode-hook #'eglot-ensure)   ; or #'lsp
;;
;; Settings (the server's `torchLsp' section, see docs/configuration.md)
;; go in `torch-lsp-settings' as a plist.

;;; Code:

(require 'cl-lib)
(require 'json)
(require 'subr-x)
(require 'url-util)

(defgroup torch-lsp nil
  "PyTorch language server."
  :group 'tools
  :prefix "torch-lsp-")

(defcustom torch-lsp-server-command '("torch-lsp" "serve")
  "Program and arguments that start the server.
For a virtual environment:
  (\"/path/venv/bin/python\" \"-m\" \"torch_lsp\" \"serve\")."
  :type '(repeat string))

(defcustom torch-lsp-settings nil
  "The server's `torchLsp' settings as a plist, sent at initialize.
Keys are camelCase, e.g.
  (:execution (:device \"meta\") :rules (:ignore [\"TL105\"]))."
  :type 'plist)

(defcustom torch-lsp-major-modes '(python-mode python-ts-mode)
  "Major modes in which torch-lsp runs."
  :type '(repeat symbol))

(defcustom torch-lsp-register-with-eglot t
  "Whether loading torch-lsp makes it eglot's server for Python.
Eglot runs one server per major mode, so this replaces pylsp or
pyright there; lsp-mode (where torch-lsp is an add-on) runs both."
  :type 'boolean)

(defun torch-lsp--settings-object ()
  "`torch-lsp-settings' as a JSON object (never null or an array)."
  (or torch-lsp-settings (make-hash-table)))

(defun torch-lsp--file-uri (&optional file)
  "The file:// URI of FILE (default: the current buffer's file)."
  (let ((path (expand-file-name (or file buffer-file-name))))
    (concat "file://" (url-hexify-string path url-path-allowed-chars))))

;;;; eglot

(declare-function eglot-current-server "eglot")
(declare-function jsonrpc-request "jsonrpc")
(defvar eglot-server-programs)

(defun torch-lsp--eglot-contact (&optional _interactive)
  "Eglot contact, read when a server starts (not when this file loads)."
  (append torch-lsp-server-command
          (list :initializationOptions (torch-lsp--settings-object))))

(with-eval-after-load 'eglot
  (when torch-lsp-register-with-eglot
    (add-to-list 'eglot-server-programs
                 (cons torch-lsp-major-modes #'torch-lsp--eglot-contact))))

;;;; lsp-mode

(declare-function lsp-register-client "lsp-mode")
(declare-function make-lsp-client "lsp-mode")
(declare-function lsp-stdio-connection "lsp-mode")
(declare-function lsp-activate-on "lsp-mode")
(declare-function lsp-find-workspace "lsp-mode")
(declare-function lsp-request "lsp-mode")
(defvar lsp--cur-workspace)

(with-eval-after-load 'lsp-mode
  (lsp-register-client
   (make-lsp-client
    :new-connection (lsp-stdio-connection
                     (lambda () torch-lsp-server-command))
    :activation-fn (lsp-activate-on "python")
    :major-modes torch-lsp-major-modes
    :server-id 'torch-lsp
    :add-on? t                  ; alongside pyright/pylsp, not instead
    :priority -2
    :initialization-options #'torch-lsp--settings-object)))

;;;; Commands

(defun torch-lsp-execute (command &optional arguments)
  "Run the server COMMAND with ARGUMENTS (a list); return its result.
Works with the client that manages the buffer: eglot or lsp-mode."
  (let ((params (list :command command :arguments (vconcat arguments)))
        (lsp-workspace (and (bound-and-true-p lsp-mode)
                            (fboundp 'lsp-find-workspace)
                            (lsp-find-workspace 'torch-lsp
                                                buffer-file-name))))
    (cond
     ((and (fboundp 'eglot-current-server) (eglot-current-server))
      (jsonrpc-request (eglot-current-server)
                       :workspace/executeCommand params))
     (lsp-workspace
      (let ((lsp--cur-workspace lsp-workspace))
        (lsp-request "workspace/executeCommand" params)))
     (t (user-error
         "torch-lsp is not running here: M-x eglot or M-x lsp")))))

(defvar torch-lsp--latest-run nil
  "The run id the last `torch-lsp-train' returned.")

(defun torch-lsp--run-id (result)
  "The run id in a `torch-lsp.train' RESULT (a string or a plist)."
  (cond ((stringp result) result)
        ((listp result) (or (plist-get result :runId)
                            (plist-get result :id)))))

(defun torch-lsp--show (title result)
  "Show RESULT in a buffer named after TITLE: its markdown, else JSON."
  (with-current-buffer (get-buffer-create (format "*torch-lsp %s*" title))
    (let ((inhibit-read-only t)
          (markdown (and (listp result) (plist-get result :markdown))))
      (erase-buffer)
      (insert (cond ((stringp markdown) markdown)
                    ((stringp result) result)
                    (t (let ((json-encoding-pretty-print t))
                         (json-encode result)))))
      (goto-char (point-min))
      (if (fboundp 'markdown-mode) (markdown-mode) (special-mode))
      (display-buffer (current-buffer)))))

(defun torch-lsp--run-arguments (run)
  "Arguments naming RUN, else the latest run, else none."
  (let ((run (if (and run (not (string-empty-p run)))
                 run
               torch-lsp--latest-run)))
    (and run (list run))))

(defun torch-lsp-train ()
  "Run the current script with live metrics (progress in the mode line)."
  (interactive)
  (save-buffer)                         ; training runs the file on disk
  (let ((run (torch-lsp--run-id
              (torch-lsp-execute "torch-lsp.train"
                                 (list (torch-lsp--file-uri))))))
    (setq torch-lsp--latest-run (or run torch-lsp--latest-run))
    (message "torch-lsp: training started%s"
             (if run (format " (run %s)" run) ""))))

(defun torch-lsp-stop-training (&optional run)
  "Stop training RUN (default: the latest)."
  (interactive (list (read-string "Run id (empty: latest): ")))
  (torch-lsp-execute "torch-lsp.stopTraining"
                     (torch-lsp--run-arguments run))
  (message "torch-lsp: training stopped"))

(defun torch-lsp-metrics (&optional run)
  "Show the metrics summary of RUN (default: the latest)."
  (interactive (list (read-string "Run id (empty: latest): ")))
  (torch-lsp--show "metrics"
                   (torch-lsp-execute "torch-lsp.metrics"
                                      (torch-lsp--run-arguments run))))

(defun torch-lsp-summary ()
  "Show the model summary of the current file."
  (interactive)
  (torch-lsp--show "summary"
                   (torch-lsp-execute "torch-lsp.summary"
                                      (list (torch-lsp--file-uri)))))

(defun torch-lsp-memory (&optional gpu-memory)
  "Show the training step's peak GPU memory of the current file.
Also the largest batch that fits in GPU-MEMORY GiB (default: the
setting shapes.gpuMemoryGb or the local GPU)."
  (interactive (list (read-string "GPU memory in GiB (empty: setting or local GPU): ")))
  (let ((gib (and gpu-memory (not (string-empty-p gpu-memory)) (string-to-number gpu-memory))))
    (torch-lsp--show "memory"
                     (torch-lsp-execute "torch-lsp.memory"
                                        (list (torch-lsp--file-uri)
                                              (if gib (list :gpuMemoryGb gib) (make-hash-table)))))))

(defun torch-lsp-server-info ()
  "Show the running server's version, interpreter and settings."
  (interactive)
  (torch-lsp--show "server info"
                   (torch-lsp-execute "torch-lsp.serverInfo")))

(provide 'torch-lsp)
;;; torch-lsp.el ends here
