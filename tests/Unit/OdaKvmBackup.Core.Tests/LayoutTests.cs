using System.Text.RegularExpressions;

namespace OdaKvmBackup.Core.Tests;

/// <summary>
/// The core's layout shows its architecture (issue 14, point 5; tools/Relayout.ps1 puts files there). Read from the
/// sources, so a failure names the file:
/// <list type="bullet">
/// <item>a file is named for a type it declares: X.cs (or X.Part.cs for a part of a partial X) declares X. Records,
/// enums and interfaces that serve that type may share its file; any other class or struct has a file of its own;</item>
/// <item>namespaces follow folders (Run/ is OdaKvmBackup.Core.Run);</item>
/// <item>folders depend downwards only: the root, Paths, Copies, Host and Stores use nothing of RunState, Run, Steps or
/// WayBack; RunState (the state of a run) uses nothing of Run, Steps or WayBack; WayBack uses nothing of Run or Steps;
/// Steps uses nothing of Run. Run drives all of them.</item>
/// </list>
/// </summary>
public sealed class LayoutTests
{
    private static readonly Regex TopLevelType = new(
        @"^(?:(?:public|internal|static|sealed|abstract|file|readonly|partial|unsafe|ref)\s+)*(class|struct|interface|enum|record(?:\s+struct|\s+class)?|delegate\s+\S+)\s+(\w+)",
        RegexOptions.Multiline);

    private static readonly Regex CommentsAndStrings = new(
        "\"\"\"[\\s\\S]*?\"\"\"|//[^\\n]*|/\\*[\\s\\S]*?\\*/|@\"(?:\"\"|[^\"])*\"|\"(?:\\\\.|[^\"\\\\\\n])*\"|'(?:\\\\.|[^'\\\\\\n])+'");

    /// <summary>Files allowed to break the name rule, and why.</summary>
    private static readonly Dictionary<string, string> NamedForTheirContent = new()
    {
        // The SFTP protocol's vocabulary (packet types, status codes, flags, attributes): records and enums only.
        ["SftpProtocol.cs"] = "SFTP's packet types, status codes and attributes",
    };

    /// <summary>Which folders a folder may not use. The root ("") and the bottom folders use none of the upper ones.</summary>
    private static readonly Dictionary<string, string[]> MayNotUse = new()
    {
        [""] = ["RunState", "Run", "Steps", "WayBack"],
        ["Paths"] = ["RunState", "Run", "Steps", "WayBack"],
        ["Copies"] = ["RunState", "Run", "Steps", "WayBack"],
        ["Host"] = ["RunState", "Run", "Steps", "WayBack"],
        ["Stores"] = ["RunState", "Run", "Steps", "WayBack"],
        // The state of a run in one place (record, journal, lock, its errors, the preflight's context): what the
        // steps and the way back read and write, and what the run drives.
        ["RunState"] = ["Run", "Steps", "WayBack"],
        ["WayBack"] = ["Run", "Steps"],
        ["Steps"] = ["Run"],
        ["Run"] = [],
    };

    /// <summary>Where the code breaks the rule today (file, type it uses): each is a known debt, not a licence. A new
    /// break fails the test; remove a line here when its break is gone.</summary>
    private static readonly HashSet<(string File, string Uses)> KnownBreaks =
    [
        // The snapshot step starts the run it returns, the copy step gives the run up when a copy fails (the
        // abandon-then-give-up sequence), and a VmDiskBackup is a pipeline object that carries its run to the next
        // cmdlet: three places where a step holds the BackupRun that drives it.
        ("Steps/SnapshotService.cs", "BackupRun"),
        ("Steps/CopyService.cs", "BackupRun"),
        ("Steps/VmDiskBackup.cs", "BackupRun"),
    ];

    [Fact]
    public void Every_file_is_named_for_a_type_it_declares_and_holds_no_other_class_or_struct()
    {
        var found = new List<string>();
        foreach (var (file, text) in CoreSources())
        {
            var name = Path.GetFileName(file);
            if (name is "AssemblyInfo.cs" or "GlobalUsings.cs" || NamedForTheirContent.ContainsKey(name))
                continue;
            var typeName = name.Split('.')[0];
            var types = TopLevelType.Matches(text).Select(m => (Kind: m.Groups[1].Value, Name: m.Groups[2].Value)).ToList();
            if (!types.Any(t => t.Name == typeName))
                found.Add($"{file}: declares no type {typeName} ({string.Join(", ", types.Select(t => t.Name))}): name it for its type");
            foreach (var other in types.Where(t => t.Name != typeName && t.Kind is "class" or "struct"))
                found.Add($"{file}: {other.Kind} {other.Name} belongs in {other.Name}.cs");
        }
        Assert.True(found.Count == 0, $"{found.Count} file(s) not named for their types:\n" + string.Join("\n", found));
    }

    [Fact]
    public void Namespaces_follow_folders()
    {
        var found = new List<string>();
        foreach (var (file, text) in CoreSources())
        {
            var folder = Path.GetDirectoryName(file)!.Replace('\\', '/');
            var expected = folder.Length == 0 ? "OdaKvmBackup.Core" : "OdaKvmBackup.Core." + folder.Replace('/', '.');
            var declared = Regex.Match(text, @"^namespace\s+([\w.]+)\s*;", RegexOptions.Multiline);
            if (declared.Success && declared.Groups[1].Value != expected)
                found.Add($"{file}: namespace {declared.Groups[1].Value}, its folder says {expected}");
            if (!declared.Success && TopLevelType.IsMatch(text))
                found.Add($"{file}: no file-scoped namespace");
        }
        Assert.True(found.Count == 0, string.Join("\n", found));
    }

    [Fact]
    public void Folders_depend_downwards_only()
    {
        var sources = CoreSources().ToList();
        var typesByFolder = sources
            .SelectMany(s => TopLevelType.Matches(s.Text).Select(m => (Folder: TopFolder(s.File), Type: m.Groups[2].Value)))
            .GroupBy(t => t.Folder)
            .ToDictionary(g => g.Key, g => g.Select(t => t.Type).ToHashSet());
        var unknownFolders = typesByFolder.Keys.Where(f => !MayNotUse.ContainsKey(f)).ToList();
        Assert.True(unknownFolders.Count == 0, $"Folder(s) with no rule in LayoutTests.MayNotUse: {string.Join(", ", unknownFolders)}");

        var found = new List<string>();
        var stillBroken = new HashSet<(string File, string Uses)>();
        foreach (var (file, text) in sources)
        {
            var code = CommentsAndStrings.Replace(text, " ");
            var words = Regex.Matches(code, @"\b[A-Z]\w*\b").Select(m => m.Value).ToHashSet();
            foreach (var upper in MayNotUse[TopFolder(file)])
            {
                foreach (var type in typesByFolder.GetValueOrDefault(upper, []).Where(words.Contains).Order(StringComparer.Ordinal))
                {
                    if (KnownBreaks.Contains((file, type)))
                        stillBroken.Add((file, type));
                    else
                        found.Add($"{file} uses {upper}/{type}");
                }
            }
        }
        Assert.True(found.Count == 0,
            $"{found.Count} use(s) against the layout's direction (bottom: root, Paths, Copies, Host, Stores, RunState; then WayBack, Steps, Run):\n" + string.Join("\n", found));
        var mended = KnownBreaks.Except(stillBroken).Select(b => $"{b.File} uses {b.Uses}").Order(StringComparer.Ordinal).ToList();
        Assert.True(mended.Count == 0, $"Known break(s) no longer there: remove them from LayoutTests.KnownBreaks:\n" + string.Join("\n", mended));
    }

    [Theory]
    [InlineData("public sealed class VmDisk", "class", "VmDisk")]
    [InlineData("internal readonly record struct OutgoingPacket(int A);", "record struct", "OutgoingPacket")]
    [InlineData("internal static unsafe partial class NativeFiles", "class", "NativeFiles")]
    [InlineData("internal ref struct SftpPacketReader", "struct", "SftpPacketReader")]
    public void A_top_level_declaration_is_read_with_its_kind_and_name(string line, string kind, string name)
    {
        var m = TopLevelType.Match(line);
        Assert.True(m.Success);
        Assert.Equal(kind, Regex.Replace(m.Groups[1].Value, @"\s+", " "));
        Assert.Equal(name, m.Groups[2].Value);
    }

    [Fact]
    public void Comments_and_strings_do_not_count_as_uses()
    {
        var code = CommentsAndStrings.Replace("var x = \"BackupRun\"; // BackupRun\n/* BackupRun */ var y = RunRecord.Load();", " ");
        Assert.DoesNotContain("BackupRun", code);
        Assert.Contains("RunRecord", code);
    }

    private static string TopFolder(string file)
    {
        var slash = file.IndexOf('/');
        return slash < 0 ? "" : file[..slash];
    }

    /// <summary>(path relative to src/OdaKvmBackup.Core with '/', text) of each source file of the core.</summary>
    private static IEnumerable<(string File, string Text)> CoreSources()
    {
        var core = Path.Join(RepositoryRoot(), "src", "OdaKvmBackup.Core");
        foreach (var path in Directory.EnumerateFiles(core, "*.cs", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
        {
            var file = Path.GetRelativePath(core, path).Replace('\\', '/');
            if (file.StartsWith("bin/", StringComparison.Ordinal) || file.StartsWith("obj/", StringComparison.Ordinal))
                continue;
            yield return (file, File.ReadAllText(path));
        }
    }

    private static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Join(dir.FullName, "build.ps1")) && Directory.Exists(Path.Join(dir.FullName, "src")))
                return dir.FullName;
        }
        throw new InvalidOperationException($"No repository (build.ps1 and src/) above {AppContext.BaseDirectory}.");
    }
}
