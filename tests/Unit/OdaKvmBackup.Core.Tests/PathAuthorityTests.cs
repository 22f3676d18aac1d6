using System.Text;
using System.Text.RegularExpressions;

namespace OdaKvmBackup.Core.Tests;

/// <summary>
/// One authority for paths (issue 14): set and retention layout, names of overlays, partial and kept-aside files, and
/// the files of a restore or a boot test are decided in BackupNames; paths in the state folder in StateDirectory;
/// joins of a folder and a name in FileSystemPaths (JoinInside for names from a store). Anywhere else in src/, a path
/// built by hand (<c>set + "/" + file</c>, <c>$"{set}/{file}"</c>, <c>Path.Combine(...)</c>) is a second rule for the
/// same path: this test names each one as file:line.
/// </summary>
public sealed class PathAuthorityTests
{
    /// <summary>The files allowed to build paths, relative to the repository (they are the authority).</summary>
    private static readonly string[] Authority =
    [
        "src/OdaKvmBackup.Core/Paths/BackupNames.cs",
        "src/OdaKvmBackup.Core/Paths/FileSystemPaths.cs",
        "src/OdaKvmBackup.Core/Paths/StateDirectory.cs",
    ];

    private static readonly (Regex Pattern, string What)[] HandBuilt =
    [
        (new(@"\+\s*""/""|""/""\s*\+"), "a \"/\" concatenated"),
        (new(@"\+\s*'/'|'/'\s*\+"), "a '/' concatenated"),
        (new(@"\bPath\s*\.\s*(Combine|Join)\s*\("), "Path.Combine or Path.Join"),
        (new(@"\bstring\s*\.\s*Join\s*\(\s*(""/""|'/')"), "string.Join with '/'"),
    ];

    // In an interpolated string: a hole followed by '/' and another hole or a name ("{set}/{file}", "{dir}/journal");
    // a unit such as "{rate}/s" is one letter and is not a path.
    private static readonly Regex InterpolatedPath = new(@"\}/(\{|[\w.-]{2,})");

    [Fact]
    public void No_path_is_built_by_hand_outside_BackupNames_StateDirectory_and_FileSystemPaths()
    {
        var root = RepositoryRoot();
        var found = new List<string>();
        foreach (var file in Directory.EnumerateFiles(Path.Join(root, "src"), "*.cs", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
        {
            var relative = Path.GetRelativePath(root, file).Replace('\\', '/');
            if (relative.Split('/').Any(part => part is "bin" or "obj") || Authority.Contains(relative, StringComparer.Ordinal))
                continue;
            var lines = File.ReadAllLines(file);
            for (var i = 0; i < lines.Length; i++)
            {
                if (Why(lines[i]) is { } why)
                    found.Add($"{relative}:{i + 1}: {why}: {lines[i].Trim()}");
            }
        }
        Assert.True(found.Count == 0,
            $"{found.Count} path(s) built by hand; let BackupNames, StateDirectory or FileSystemPaths build them:\n" + string.Join("\n", found));
    }

    /// <summary>The scanner itself: it finds each way of building a path by hand, and leaves comments and message
    /// text alone (else the test above could pass by seeing nothing, or fail on a sentence).</summary>
    [Theory]
    [InlineData("        await store.DeleteAsync(set + \"/\" + entry.Name, recursive: false, ct);", true)]
    [InlineData("    public static string ManifestPath(string setFolder) => setFolder +\"/\"+ BackupNames.ManifestFileName;", true)]
    [InlineData("        var path = folder + '/' + name;", true)]
    [InlineData("        var target = System.IO.Path.Combine(_path, folder, record.RetainedName);", true)]
    [InlineData("        var target = Path.Join(a, b);", true)]
    [InlineData("        var p = string.Join(\"/\", parts);", true)]
    [InlineData("        var p = $\"{set}/{file}\";", true)]
    [InlineData("        var p = $\"{StateDirectory.Root}/journal\";", true)]
    [InlineData("        // set + \"/\" + file is what BackupNames.FileInSet replaces", false)]
    [InlineData("    /// <summary>A file of a set: &lt;set&gt;/&lt;name&gt; (Path.Combine would not check it).</summary>", false)]
    [InlineData("            + (rate > 0 ? $\", {FileSystemPaths.FormatBytes((long)rate)}/s\" : \"\")", false)]
    [InlineData("                \"Create the folder on the server (mkdir -m 700), or correct the destination; a relative path starts at the SSH user's home folder.\", Location);", false)]
    [InlineData("        if (name.StartsWith('/')) return \"it is an absolute path\"; // not a '/' + anything", false)]
    [InlineData("        var p = BackupNames.FileInSet(set, entry.Name);", false)]
    public void The_scanner_finds_hand_built_paths_and_not_comments_or_sentences(string line, bool handBuilt)
    {
        Assert.Equal(handBuilt, Why(line) is not null);
    }

    /// <summary>What is built by hand on the line, or null; comments are cut off first.</summary>
    private static string? Why(string line)
    {
        var code = WithoutComment(line);
        foreach (var (pattern, what) in HandBuilt)
        {
            if (pattern.IsMatch(code))
                return what;
        }
        return code.Contains("$\"", StringComparison.Ordinal) || code.Contains("$@\"", StringComparison.Ordinal) || code.Contains("@$\"", StringComparison.Ordinal)
            ? InterpolatedPath.IsMatch(code) ? "an interpolated \"{folder}/{name}\"" : null
            : null;
    }

    /// <summary>The line without its // comment; a "//" inside a string or char literal is not a comment.</summary>
    private static string WithoutComment(string line)
    {
        var code = new StringBuilder(line.Length);
        char? quote = null;
        for (var i = 0; i < line.Length; i++)
        {
            var c = line[i];
            if (quote is null && c == '/' && i + 1 < line.Length && line[i + 1] == '/')
                break;
            if (quote is not null && c == '\\' && i + 1 < line.Length)
            {
                code.Append(c).Append(line[++i]);
                continue;
            }
            if (c is '"' or '\'')
                quote = quote is null ? c : quote == c ? null : quote;
            code.Append(c);
        }
        return code.ToString();
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
