using OdaKvmBackup.HelpBuilder.Tests.Support;

namespace OdaKvmBackup.HelpBuilder.Tests;

public class ProgramTests
{
    private static (int ExitCode, string Output, string Error) Run(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        int exitCode = Program.Run(args, output, error);
        return (exitCode, output.ToString(), error.ToString());
    }

    [Fact]
    public void Check_exits_0_when_the_help_agrees()
    {
        var (exitCode, output, _) = Run("check", "--docs", Fixture.Path("Agreeing"), "--facts", Fixture.Path("Sample.facts.json"));
        Assert.Equal(Program.Success, exitCode);
        Assert.Contains("2 cmdlet(s), 2 page(s), 1 about topic(s): they agree.", output, StringComparison.Ordinal);
    }

    [Fact]
    public void Check_exits_1_and_reports_every_disagreement()
    {
        var (exitCode, output, _) = Run("check", "--docs", Fixture.Path("Disagreeing"), "--facts", Fixture.Path("Sample.facts.json"));
        Assert.Equal(Program.Disagreement, exitCode);
        Assert.Contains("Get-Widget.md: documents -Colour, which Get-Widget does not have", output, StringComparison.Ordinal);
        Assert.Contains("11 problem(s)", output, StringComparison.Ordinal);
    }

    [Fact]
    public void Build_writes_the_MAML_and_the_about_topics_and_warns_of_disagreements()
    {
        using var temp = new TempFolder();
        var (exitCode, _, error) = Run("build", "--docs", Fixture.Path("Disagreeing"), "--facts", Fixture.Path("Sample.facts.json"), "--out", temp.FullPath);
        Assert.Equal(Program.Success, exitCode);
        Assert.True(File.Exists(temp.Combine("Sample.dll-Help.xml")));
        Assert.True(File.Exists(temp.Combine("about_Sample.help.txt")));
        Assert.Contains("WARNING: ", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Update_makes_the_facts_agree_and_writes_a_page_for_a_cmdlet_without_one()
    {
        using var docs = Fixture.CopyOf("Disagreeing");
        var (exitCode, output, _) = Run("update", "--docs", docs.FullPath, "--facts", Fixture.Path("Sample.facts.json"));
        Assert.Equal(Program.Success, exitCode);
        Assert.True(File.Exists(docs.Combine("Set-Widget.md")));
        Assert.Contains("Get-Widget.md: SYNTAX;", output, StringComparison.Ordinal);
        var (_, check, _) = Run("check", "--docs", docs.FullPath, "--facts", Fixture.Path("Sample.facts.json"));
        Assert.DoesNotContain("yaml says", check, StringComparison.Ordinal);
        Assert.DoesNotContain("differs", check, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("frobnicate", "--docs", "x")]
    [InlineData("check", "--docs")]
    [InlineData("check", "--docs", "x", "--colour", "red")]
    public void Wrong_arguments_exit_2_with_the_usage(params string[] args)
    {
        var (exitCode, _, error) = Run(args);
        Assert.Equal(Program.Failure, exitCode);
        Assert.Contains("Usage:", error, StringComparison.Ordinal);
    }

    [Fact]
    public void A_missing_module_exits_2_with_the_reason()
    {
        var (exitCode, _, error) = Run("check", "--docs", Fixture.Path("Agreeing"), "--module", "/nonexistent/Sample.psd1");
        Assert.Equal(Program.Failure, exitCode);
        Assert.Contains("build the module first", error, StringComparison.Ordinal);
    }
}
