using OdaKvmBackup.HelpBuilder.Checking;
using OdaKvmBackup.HelpBuilder.Facts;
using OdaKvmBackup.HelpBuilder.Maml;
using OdaKvmBackup.HelpBuilder.Markdown;
using OdaKvmBackup.HelpBuilder.Updating;

namespace OdaKvmBackup.HelpBuilder;

/// <summary>
/// HelpBuilder build|check|update: docs/help (PlatyPS markdown) and the built module's cmdlets → MAML help,
/// a report of every disagreement, or the markdown rewritten from the cmdlets.
/// </summary>
public static class Program
{
    public const int Success = 0;
    public const int Disagreement = 1;
    public const int Failure = 2;

    private const string Usage = """
        Usage:
          HelpBuilder build  --docs <folder> --out <folder> (--module <psd1> | --facts <json>) [--pwsh <path>]
          HelpBuilder check  --docs <folder> (--module <psd1> | --facts <json>) [--pwsh <path>]
          HelpBuilder update --docs <folder> (--module <psd1> | --facts <json>) [--pwsh <path>]
          HelpBuilder facts  --module <psd1> --out <json> [--pwsh <path>]

          build   writes <out>/<Assembly>.dll-Help.xml and <out>/about_*.help.txt; prints disagreements as warnings
          check   prints every disagreement between docs/help and the cmdlets; exit code 1 if there is any
          update  rewrites SYNTAX and the parameters' yaml blocks from the cmdlets, adds stubs, drops stale sections
          facts   writes the cmdlets' metadata as JSON (what --facts reads)
        --module imports the built module in a child pwsh to read its cmdlets: --pwsh is its executable, or its
        pwsh.dll (run with dotnet); default "pwsh" from PATH.
        """;

    private const string FixHint =
        "'HelpBuilder update' (./build.ps1 -Task UpdateHelp) rewrites SYNTAX and the yaml blocks from the cmdlets; the text is for a person to write.";

    public static int Main(string[] args) => Run(args, Console.Out, Console.Error);

    public static int Run(string[] args, TextWriter output, TextWriter error)
    {
        try
        {
            var options = Options.Parse(args);
            return options.Command switch
            {
                "build" => Build(options, output, error),
                "check" => Check(options, output),
                "update" => Update(options, output),
                "facts" => WriteFacts(options, output),
                _ => throw new ArgumentException($"Unknown command '{options.Command}'."),
            };
        }
        catch (ArgumentException e)
        {
            error.WriteLine(e.Message);
            error.WriteLine(Usage);
            return Failure;
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or InvalidDataException or TimeoutException
                                       or System.ComponentModel.Win32Exception or System.Text.Json.JsonException)
        {
            error.WriteLine($"HelpBuilder: {e.Message}");
            return Failure;
        }
    }

    private static ModuleFacts LoadFacts(Options options) =>
        options.FactsFile is { } file ? ModuleFacts.Load(file)
        : options.Module is { } manifest ? PowerShellFactsReader.Read(manifest, options.Pwsh)
        : throw new ArgumentException("Give --module <psd1> or --facts <json>.");

    private static int Build(Options options, TextWriter output, TextWriter error)
    {
        string outFolder = options.Out ?? throw new ArgumentException("build needs --out <folder>.");
        var module = LoadFacts(options);
        var help = HelpFolder.Load(options.Docs);
        // The check is the gate (Help.Tests.ps1); the build still writes the best help it can, and says what is wrong.
        var findings = HelpChecker.Check(help, module);
        foreach (var finding in findings) error.WriteLine($"WARNING: {Relative(finding)}");
        if (findings.Count > 0) error.WriteLine($"WARNING: {findings.Count} problem(s) in the help. {FixHint}");

        var documented = module.Commands.Select(c => (Command: c, Page: help.FindPage(c.Name)))
            .Where(x => x.Page is not null).Select(x => (x.Command, x.Page!)).ToList();
        foreach (string helpFile in module.Commands.Select(c => c.HelpFile).Distinct())
        {
            var items = MamlBuilder.Build(documented.Where(x => x.Command.HelpFile == helpFile));
            string path = Path.Combine(outFolder, helpFile);
            MamlBuilder.Write(items, path);
            output.WriteLine($"{Path.GetRelativePath(Environment.CurrentDirectory, path)}: {items.Commands.Count} cmdlet(s)");
        }
        foreach (var topic in help.AboutTopics)
        {
            string path = Path.Combine(outFolder, topic.Name + ".help.txt");
            File.WriteAllText(path, topic.ToHelpText());
            output.WriteLine(Path.GetRelativePath(Environment.CurrentDirectory, path));
        }
        return Success;
    }

    private static int Check(Options options, TextWriter output)
    {
        var module = LoadFacts(options);
        var help = HelpFolder.Load(options.Docs);
        var findings = HelpChecker.Check(help, module);
        foreach (var finding in findings) output.WriteLine(Relative(finding));
        output.WriteLine($"Help check: {module.Commands.Count} cmdlet(s), {help.Pages.Count} page(s), {help.AboutTopics.Count} about topic(s): " +
                         (findings.Count == 0 ? "they agree." : $"{findings.Count} problem(s). {FixHint}"));
        return findings.Count == 0 ? Success : Disagreement;
    }

    private static int Update(Options options, TextWriter output)
    {
        var module = LoadFacts(options);
        var help = HelpFolder.Load(options.Docs);
        foreach (var command in module.Commands)
        {
            var page = help.FindPage(command.Name);
            if (page is null)
            {
                string path = Path.Combine(options.Docs, command.Name + ".md");
                File.WriteAllText(path, MarkdownUpdater.NewPage(command, module.ModuleName));
                output.WriteLine($"{Path.GetRelativePath(Environment.CurrentDirectory, path)}: new page (fill in the {HelpChecker.StubMarker} parts)");
                continue;
            }
            var (text, changes) = MarkdownUpdater.Update(page, command);
            if (changes.Count == 0) continue;
            File.WriteAllText(page.Path, text);
            output.WriteLine($"{Path.GetRelativePath(Environment.CurrentDirectory, page.Path)}: {string.Join("; ", changes)}");
        }
        // Pages are never deleted here: a page without a cmdlet may be a rename in progress.
        var remaining = HelpChecker.Check(HelpFolder.Load(options.Docs), module);
        foreach (var finding in remaining) output.WriteLine($"still to do: {Relative(finding)}");
        output.WriteLine($"Help update: {module.Commands.Count} cmdlet(s); {remaining.Count} problem(s) left for a person.");
        return Success;
    }

    private static int WriteFacts(Options options, TextWriter output)
    {
        string path = options.Out ?? throw new ArgumentException("facts needs --out <json>.");
        var module = PowerShellFactsReader.Read(options.Module ?? throw new ArgumentException("facts needs --module <psd1>."), options.Pwsh);
        File.WriteAllText(path, System.Text.Json.JsonSerializer.Serialize(module, new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
        output.WriteLine($"{path}: {module.Commands.Count} cmdlet(s)");
        return Success;
    }

    private static string Relative(Finding finding) =>
        $"{Path.GetRelativePath(Environment.CurrentDirectory, finding.Path)}: {finding.Message}";

    private sealed record Options(string Command, string Docs, string? Out, string? Module, string? FactsFile, string Pwsh)
    {
        public static Options Parse(string[] args)
        {
            if (args.Length == 0) throw new ArgumentException("No command given.");
            var values = new Dictionary<string, string>(StringComparer.Ordinal);
            for (int i = 1; i < args.Length; i++)
            {
                if (!args[i].StartsWith("--", StringComparison.Ordinal) || i + 1 >= args.Length)
                    throw new ArgumentException($"Expected '--option value' at '{args[i]}'.");
                values[args[i][2..]] = args[++i];
            }
            var known = new[] { "docs", "out", "module", "facts", "pwsh" };
            foreach (string key in values.Keys.Except(known)) throw new ArgumentException($"Unknown option --{key}.");
            string command = args[0];
            string docs = values.GetValueOrDefault("docs") ?? (command == "facts" ? "" : throw new ArgumentException($"{command} needs --docs <folder>."));
            return new Options(command, docs, values.GetValueOrDefault("out"), values.GetValueOrDefault("module"),
                values.GetValueOrDefault("facts"), values.GetValueOrDefault("pwsh") ?? "pwsh");
        }
    }
}
