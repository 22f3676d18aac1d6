using OdaKvmBackup.HelpBuilder.Checking;
using OdaKvmBackup.HelpBuilder.Markdown;
using OdaKvmBackup.HelpBuilder.Tests.Support;

namespace OdaKvmBackup.HelpBuilder.Tests;

public class HelpCheckerTests
{
    private static List<Finding> Check(string folder) => HelpChecker.Check(HelpFolder.Load(Fixture.Path(folder)), Fixture.Sample);

    private static List<string> MessagesFor(List<Finding> findings, string file) =>
        findings.Where(f => Path.GetFileName(f.Path) == file).Select(f => f.Message).ToList();

    [Fact]
    public void Pages_that_agree_with_their_cmdlets_pass()
    {
        Assert.Empty(Check("Agreeing"));
    }

    [Fact]
    public void Every_disagreement_of_a_page_with_its_cmdlet_is_reported()
    {
        var messages = MessagesFor(Check("Disagreeing"), "Get-Widget.md");
        Assert.Equal(
        [
            "front matter 'Module Name: Other' should be 'Module Name: Sample'",
            "SYNTAX of set ByName differs from the cmdlet's: Get-Widget [[-Name] <String[]>] [-Kind <String>] [-Limit <Nullable[Int32]>] [-Detailed] [<CommonParameters>]",
            "-Name: the yaml says 'Aliases: None', the cmdlet 'Aliases: WidgetName'",
            "-Name: the yaml says 'Position: 1', the cmdlet 'Position: 0'",
            "-Kind: the yaml blocks are for the sets [(All)], the cmdlet's for [ByName; ById]",
            "the description of -Detailed is missing or empty",
            "documents -Colour, which Get-Widget does not have",
            "-Limit of Get-Widget is not documented",
        ], messages);
    }

    [Fact]
    public void A_cmdlet_without_page_and_a_page_without_cmdlet_are_reported()
    {
        var findings = Check("Disagreeing");
        Assert.Equal(["Set-Widget has no page: './build.ps1 -Task UpdateHelp' writes one to fill in"], MessagesFor(findings, "Set-Widget.md"));
        Assert.Equal(["Sample has no cmdlet Remove-Widget: rename or delete the page"], MessagesFor(findings, "Remove-Widget.md"));
    }

    [Fact]
    public void An_about_topic_without_short_description_is_reported()
    {
        Assert.Equal(["has no ## SHORT DESCRIPTION"], MessagesFor(Check("Disagreeing"), "about_Sample.md"));
    }

    [Fact]
    public void A_module_without_its_about_topic_is_reported()
    {
        using var docs = Fixture.CopyOf("Agreeing");
        File.Delete(docs.Combine("about_Sample.md"));
        var finding = Assert.Single(HelpChecker.Check(HelpFolder.Load(docs.FullPath), Fixture.Sample));
        Assert.Equal("the module has no about_Sample topic", finding.Message);
    }

    [Theory]
    [InlineData("## SYNOPSIS\nGets the widgets of the *sample* store.\n", "## SYNOPSIS\n", "## SYNOPSIS is missing or empty")]
    [InlineData("Gets the widgets of the *sample* store.", "{{ TODO: one sentence. }}", "## SYNOPSIS is still the stub")]
    [InlineData("`Get-Widget` reads widgets by name or by id. It changes nothing.", "{{ TODO: more. }}", "## DESCRIPTION is still the stub")]
    [InlineData("Only widgets of this kind.", "{{ TODO: describe -Kind. }}", "the description of -Kind is still the stub")]
    [InlineData("The name may hold wildcards.", "{{ TODO: what the example shows. }}", "example 'Example 1: Get a widget by name' is still the stub")]
    [InlineData("### Sample.Widget\nOne object per widget.", "### Other.Type\nOne object per widget.", "[OutputType] Sample.Widget is not under ## OUTPUTS")]
    [InlineData("Accept wildcard characters: True", "Accept wildcard characters: False", "-Name: the yaml says 'Accept wildcard characters: False', the cmdlet 'Accept wildcard characters: True'")]
    [InlineData("Accept pipeline input: True (ByPropertyName, ByValue)", "Accept pipeline input: True (ByValue)", "-Name: the yaml says 'Accept pipeline input: True (ByValue)', the cmdlet 'Accept pipeline input: True (ByPropertyName, ByValue)'")]
    [InlineData("Type: String[]", "Type: String", "-Name: the yaml says 'Type: String', the cmdlet 'Type: String[]'")]
    public void An_unfinished_or_wrong_page_fails(string find, string replace, string expected)
    {
        var page = Fixture.Read("Agreeing", "Get-Widget.md");
        Assert.Contains(find, page, StringComparison.Ordinal);
        var broken = CommandPageParser.Parse("Get-Widget.md", ReplaceFirst(page, find, replace));
        var messages = HelpChecker.CheckPage(broken, Fixture.SampleCommand("Get-Widget"), "Sample").ToList();
        Assert.Equal([expected], messages);
    }

    [Fact]
    public void A_page_written_for_a_new_cmdlet_fails_until_it_is_filled_in()
    {
        var command = Fixture.SampleCommand("Set-Widget");
        var page = CommandPageParser.Parse("Set-Widget.md", Updating.MarkdownUpdater.NewPage(command, "Sample"));
        var messages = HelpChecker.CheckPage(page, command, "Sample").ToList();
        Assert.Contains("## SYNOPSIS is still the stub", messages);
        Assert.Contains("the description of -Colour is still the stub", messages);
        // Its facts agree from the start: only the text a person must write is missing.
        Assert.DoesNotContain(messages, m => m.Contains("yaml", StringComparison.Ordinal) || m.Contains("SYNTAX", StringComparison.Ordinal));
    }

    private static string ReplaceFirst(string text, string find, string replace)
    {
        int at = text.IndexOf(find, StringComparison.Ordinal);
        return text[..at] + replace + text[(at + find.Length)..];
    }
}
